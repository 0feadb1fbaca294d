//! The command line: `misim up`, one-party commands, and client verbs that mirror `az`. Argument
//! types only (clap): a leaf that names no handler; `main.rs` and `client::run` dispatch the commands.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::endpoints;

/// The audience AKS projects into workload-identity pods and Azure AD expects
/// (<https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust>).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// misim: Azure Managed Identities simulated on your machine.
///
/// Start everything with `misim up`, then drive it like `az`:
///
///   misim group create -n rg1 -l westeurope
///   misim vm create -g rg1 -n vm1
///   misim vm identity assign -g rg1 -n vm1 --identities system
///   misim token get -g rg1 -n vm1 --resource https://management.azure.com/
///
/// Client verbs talk to ARM over gRPC at --arm (env MISIM_ARM, default http://127.0.0.1:7700).
#[derive(Parser, Debug)]
#[command(name = "misim", version, verbatim_doc_comment)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `misim_imds=debug`.
    #[arg(long, global = true, env = "MISIM_LOG", default_value = "info")]
    pub log: String,
    /// Log line format of the servers: text, or json (one object per line, with the trace_id of
    /// the flow the line belongs to).
    #[arg(long, global = true, env = "MISIM_LOG_FORMAT", default_value = "text")]
    pub log_format: misim_core::telemetry::LogFormat,
    /// Export every flow's spans with OpenTelemetry's OTLP/HTTP exporter to this collector, e.g.
    /// http://127.0.0.1:4318 (spans go to ENDPOINT/v1/traces); default: OTEL_EXPORTER_OTLP_ENDPOINT.
    /// Spans are always kept in memory too (`misim trace show`, ARM's /console).
    #[arg(long, global = true)]
    pub otlp_endpoint: Option<String>,
    /// Serve /metrics (Prometheus) and /debug/traces (this process' spans) on this address too,
    /// e.g. 127.0.0.1:9464: for parties without an HTTP listener of their own (msrp, imds).
    #[arg(long, global = true, env = "MISIM_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the client verbs find ARM's gRPC API.
#[derive(clap::Args, Debug, Clone)]
pub struct ArmConn {
    /// ARM gRPC endpoint (arm_grpc in DATA_DIR/endpoints.json).
    #[arg(
        long,
        global = true,
        env = "MISIM_ARM",
        default_value_t = crate::endpoints::default_url(crate::endpoints::ARM_GRPC_OFFSET)
    )]
    pub arm: String,
    /// Bearer token for ARM's gRPC API when misim was started with --arm-api-token.
    #[arg(long, global = true, env = "MISIM_ARM_TOKEN", hide_env_values = true)]
    pub arm_token: Option<String>,
}

/// Every `misim` verb.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start every party in one process on loopback (ARM, MSRP, Azure AD, N hosts with IMDS).
    ///
    /// Prints the endpoints and writes them to DATA_DIR/endpoints.json. Fixed default ports:
    /// ARM gRPC 7700, ARM REST 7701, Azure AD HTTP 7702, Azure AD gRPC 7703, MSRP 7704,
    /// Azure AD HTTPS 7705, ARM REST HTTPS 7706, host-N agents 7710+N, VMs' IMDS 7800-8799;
    /// --base-port moves the block, --base-port 0 picks free ports.
    ///
    /// Example: misim up --data-dir /tmp/misim --hosts 2
    #[command(verbatim_doc_comment)]
    Up(UpArgs),
    /// Run Azure AD alone (token endpoint, discovery, JWKS, admin gRPC).
    Aad(AadArgs),
    /// Run MSRP alone (service principals and certificates of identities).
    Msrp(MsrpArgs),
    /// Run one host alone (host agent + the IMDS endpoints of its VMs).
    Imds(ImdsArgs),
    /// Run ARM alone (control-plane gRPC + REST surface).
    Arm(ArmArgs),
    /// Subscription of the running system (like `az account show`).
    Account {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Resource groups (like `az group`).
    Group {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Virtual machines and their identities (like `az vm`).
    Vm {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Virtual machine scale sets and their identities (like `az vmss`).
    Vmss {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: VmssCommand,
    },
    /// Key vaults and secrets (like `az keyvault`).
    Keyvault {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: KeyvaultCommand,
    },
    /// User-assigned managed identities (like `az identity`).
    Identity {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Role assignments (like `az role assignment`).
    Role {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// App Service / Functions web apps and their identities (like `az webapp`).
    Webapp {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: WebappCommand,
    },
    /// AKS clusters as OIDC issuers and their pods' projected service-account tokens (like
    /// `az aks` with workload identity). Example: misim aks create -g rg1 -n aks1
    Aks {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: AksCommand,
    },
    /// Ask a VM's IMDS for a token, as code inside the VM would (step 5 of the flow).
    Token {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Azure AD app registrations, app roles and their assignments to managed identities
    /// (like `az ad app` / `az ad sp`).
    ///
    /// Example: misim ad app create --display-name orders-api --identifier-uris api://orders-api \
    ///            --app-role Orders.Read
    #[command(verbatim_doc_comment)]
    Ad(AdArgs),
    /// Flows as sequence diagrams, from the spans the parties keep in memory (docs/observability.md).
    ///
    /// Example: misim trace show --last --format mermaid
    #[command(verbatim_doc_comment)]
    Trace(TraceArgs),
    /// The requests the parties recorded: time (simulated and wall), party, caller, operation,
    /// parameters (secrets redacted), outcome, latency and trace ID (docs/scenarios.md).
    ///
    /// Example: misim events --vm vm1 --follow
    #[command(verbatim_doc_comment)]
    Events(EventsArgs),
    /// Run or check scenario files: steps with expectations, against a running misim or an
    /// embedded one (docs/scenarios.md).
    ///
    /// Example: misim scenario run scenarios/*.yaml --embedded --junit out.xml
    #[command(verbatim_doc_comment)]
    Scenario(ScenarioArgs),
    /// Measure a running misim: load a VM's IMDS token endpoint (req/s, p50/p99, errors), or create
    /// thousands of VMs / identities timing each call (docs/performance.md; bench/run is the suite).
    ///
    /// Example: misim bench token --vm vm1 -g rg1 --concurrency 32 --duration 10s
    #[command(verbatim_doc_comment)]
    Bench {
        /// Where ARM is.
        #[command(flatten)]
        conn: ArmConn,
        /// The subcommand.
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// The simulated clock every party reads: show it, advance it (`misim up --clock manual`).
    ///
    /// Example: misim clock advance 25h
    #[command(verbatim_doc_comment)]
    Clock(ClockArgs),
    /// Fault injection: HTTP/gRPC errors, latency, closed connections on any party's endpoint.
    ///
    /// Example: misim fault add --party vm:vm1 --endpoint imds --status 429 --count 2
    #[command(verbatim_doc_comment)]
    Fault(FaultArgs),
    /// Report every difference between ARM's desired state and MSRP, Azure AD and the hosts
    /// (Health/Consistency), and whether it is converging; fails while any remain (--wait N:
    /// wait up to N s for none).
    ///
    /// Example: misim doctor --wait 30
    #[command(verbatim_doc_comment)]
    Doctor(DoctorArgs),
    /// Move a party's damaged store aside (never deleted) so it starts empty; ARM re-creates what
    /// it knows. Stop misim first.
    ///
    /// Example: misim repair --data-dir /tmp/misim --party msrp
    #[command(verbatim_doc_comment)]
    Repair(RepairArgs),
    /// Control-plane certificates (mutual TLS between parties; see docs/security.md).
    Certs {
        /// The subcommand.
        #[command(subcommand)]
        command: CertsCommand,
    },
}

/// `misim certs …`
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Issue a party certificate from misim's CA: OUT/cert.pem, OUT/key.pem (0600), OUT/ca.pem.
    ///
    /// Every internal gRPC call is mutual TLS; the certificate's role decides what its holder may
    /// call: arm (configures hosts, creates identities), msrp (manages key credentials in Azure AD),
    /// aad, host:NAME (fetches the credentials of its own VMs' identities), admin (everything; for
    /// debugging, e.g. grpcurl -cacert OUT/ca.pem -cert OUT/cert.pem -key OUT/key.pem).
    ///
    /// Example: misim certs issue --ca-dir misim-data/ca --role host:host-1 --name host-1 --out certs/host-1
    #[command(verbatim_doc_comment)]
    Issue {
        /// Directory of misim's CA (ca.pem, ca.key; created if missing).
        #[arg(long, env = "MISIM_CA_DIR", default_value = crate::endpoints::DEFAULT_CA_DIR)]
        ca_dir: PathBuf,
        /// Role: arm, msrp, aad, admin or host:NAME.
        #[arg(long)]
        role: String,
        /// DNS names or IP addresses the party is reached by, besides localhost/127.0.0.1/::1.
        #[arg(long = "name", value_delimiter = ',')]
        names: Vec<String>,
        /// Directory to write cert.pem, key.pem and ca.pem into (created 0700).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `misim up` options.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Data directory (state survives restarts with the same directory).
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Number of hosts, each with its own IMDS.
    #[arg(long, default_value_t = crate::endpoints::DEFAULT_HOSTS)]
    pub hosts: u16,
    /// First port of the fixed port block; 0 picks a free port for every listener.
    #[arg(long, env = "MISIM_BASE_PORT", default_value_t = crate::endpoints::DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Access-token lifetime in seconds (Azure: about 24 h).
    #[arg(long, env = "MISIM_TOKEN_LIFETIME", default_value_t = misim_aad::DEFAULT_TOKEN_LIFETIME_SECS)]
    pub token_lifetime: i64,
    /// Age in seconds at which Azure AD rotates its token-signing key (0 = never; default 30 days).
    #[arg(long, env = "MISIM_SIGNING_KEY_ROTATION", default_value_t = misim_aad::DEFAULT_SIGNING_KEY_ROTATION_SECS)]
    pub signing_key_rotation: i64,
    /// Extra names for the HTTPS certificate besides localhost/127.0.0.1/::1 (e.g. aad,arm).
    #[arg(long = "tls-name", env = "MISIM_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// Ports of the VMs' own IMDS listeners, START-END (default: base port + 100 to + 1099, i.e.
    /// 7800-8799; any free port with --base-port 0). A VM keeps its port across restarts.
    #[arg(long, env = "MISIM_VM_PORTS")]
    pub vm_ports: Option<String>,
    /// Require `authorization: Bearer TOKEN` on ARM's gRPC API, for machines shared with other
    /// users (the API is otherwise open to every local process); clients set MISIM_ARM_TOKEN.
    #[arg(long, env = "MISIM_ARM_API_TOKEN", hide_env_values = true)]
    pub arm_api_token: Option<String>,
    /// Switch IMDS throttling off on every host (Azure limits each VM to 20 identity requests/s and
    /// 5 at once, answering 429 beyond); for load tests such as `misim bench token` and bench/run.
    #[arg(long, env = "MISIM_NO_THROTTLE")]
    pub no_throttle: bool,
    /// How VMs reach IMDS: per-vm (each VM its own loopback port, endpoint
    /// `http://127.0.0.1:PORT`; one descriptor per VM) or shared (one loopback port per host,
    /// endpoints `http://127.0.0.1:PORT/vms/{vmId}`; for thousands of VMs under `ulimit -n` 1024).
    #[arg(long, env = "MISIM_IMDS_LISTENER", default_value = "per-vm")]
    pub imds_listener: misim_imds::ImdsListener,
    /// Key type of identity certificates: rsa-2048 (Azure's) or ec-p256 (generated in microseconds,
    /// for simulations with very many identities; Azure AD then takes ES256 client assertions).
    #[arg(long, env = "MISIM_IDENTITY_KEY_TYPE", default_value_t = misim_core::cert::KeyType::Rsa2048)]
    pub identity_key_type: misim_core::cert::KeyType,
    /// Time source of every party: `system` (the wall clock) or `manual` (starts at the wall
    /// clock's time and moves only with `misim clock advance|set`; docs/faults-and-time.md).
    #[arg(long, env = "MISIM_CLOCK", default_value = "system", value_parser = ["system", "manual"])]
    pub clock: String,
    /// Azure's propagation delays, e.g. role-assignment=60s,identity=10s (default 0): a role
    /// assignment authorizes ARM REST calls, and an identity change reaches IMDS, only after its delay.
    #[arg(long, env = "MISIM_PROPAGATION", default_value = "")]
    pub propagation: String,
    /// Before printing "misim is up" and writing endpoints.json, wait up to SECONDS (default 60)
    /// until ARM, MSRP, Azure AD and every host agree (no difference in `misim doctor`'s report),
    /// printing progress; fails with the differences left when they do not settle in time.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
    pub wait_consistent: Option<u64>,
}

/// `misim account …`
#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Show the default subscription and the tenant it trusts.
    Show,
}

/// Resource-group selector shared by many verbs.
#[derive(clap::Args, Debug, Clone)]
pub struct Named {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// Resource name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

/// `misim group …`
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create (or update) a resource group. Example: misim group create -n rg1 -l westeurope
    Create {
        /// Resource group name.
        #[arg(short = 'n', long)]
        name: String,
        /// Location (any Azure region name).
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
    },
    /// Show a resource group. Example: misim group show -n rg1
    Show {
        /// Resource group name.
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List resource groups.
    List,
    /// Delete an empty resource group. Example: misim group delete -n rg1
    Delete {
        /// Resource group name.
        #[arg(short = 'n', long)]
        name: String,
    },
}

/// `misim vm …`
#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create a VM and place it on a host. Example: misim vm create -g rg1 -n vm1 --host host-1
    Create {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
        /// Host to place the VM on (default: the host with the fewest VMs).
        #[arg(long)]
        host: Option<String>,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// VM size.
        #[arg(long, default_value = "Standard_D2s_v3")]
        size: String,
        /// Private IP address (default: the next free one in 10.0.0.0/16).
        #[arg(long = "private-ip")]
        private_ip: Option<String>,
    },
    /// Show a VM, including its identity block and its IMDS endpoint. Example: misim vm show -g rg1 -n vm1
    Show {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
    },
    /// List VMs in a resource group. Example: misim vm list -g rg1
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a VM (its system-assigned identity goes with it). Example: misim vm delete -g rg1 -n vm1
    Delete {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
    },
    /// Managed identities of a VM.
    Identity {
        /// The subcommand.
        #[command(subcommand)]
        command: VmIdentityCommand,
    },
    /// VM extensions (only the legacy managed-identity extension).
    Extension {
        /// The subcommand.
        #[command(subcommand)]
        command: VmExtensionCommand,
    },
}

/// A VM extension: the VM (`-g`, `--vm-name`) and the extension's name (`-n`).
#[derive(clap::Args, Debug, Clone)]
pub struct VmExtensionName {
    /// Resource group of the VM.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// The VM.
    #[arg(long = "vm-name")]
    pub vm_name: String,
    /// Extension name (= type): ManagedIdentityExtensionForLinux or ManagedIdentityExtensionForWindows.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

/// `misim vm extension …`
#[derive(Subcommand, Debug)]
pub enum VmExtensionCommand {
    /// Install or re-run the managed-identity VM extension.
    ///
    /// Example: misim vm extension set -g rg1 --vm-name vm1 -n ManagedIdentityExtensionForLinux \
    ///            --publisher Microsoft.ManagedIdentity --version 1.0 --settings '{"port":50342}'
    #[command(verbatim_doc_comment)]
    Set {
        /// The VM and the extension.
        #[command(flatten)]
        ext: VmExtensionName,
        /// Extension publisher (only Microsoft.ManagedIdentity is simulated).
        #[arg(long, default_value = "Microsoft.ManagedIdentity")]
        publisher: String,
        /// typeHandlerVersion (1.x).
        #[arg(long, default_value = "1.0")]
        version: String,
        /// Settings JSON, e.g. '{"port":50342}'.
        #[arg(long)]
        settings: Option<String>,
        /// Re-run the extension even if nothing changed (a new forceUpdateTag).
        #[arg(long)]
        force_update: bool,
    },
    /// Remove the extension. Example: misim vm extension delete -g rg1 --vm-name vm1 -n ManagedIdentityExtensionForLinux
    Delete {
        /// The VM and the extension.
        #[command(flatten)]
        ext: VmExtensionName,
    },
    /// List the VM's extensions. Example: misim vm extension list -g rg1 --vm-name vm1
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The VM.
        #[arg(long = "vm-name")]
        vm_name: String,
    },
}

/// `misim vmss …`
#[derive(Subcommand, Debug)]
pub enum VmssCommand {
    /// Create a scale set; its instances are spread over the hosts.
    /// Example: misim vmss create -g rg1 -n ss1 --instance-count 3
    #[command(verbatim_doc_comment)]
    Create {
        /// The scale set (resource group and name).
        #[command(flatten)]
        vmss: Named,
        /// Number of instances (each is a VM placed on a host, with its own IMDS endpoint).
        #[arg(long = "instance-count", default_value_t = 2)]
        instance_count: u32,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Instance size.
        #[arg(long = "vm-sku", default_value = "Standard_D2s_v3")]
        vm_sku: String,
    },
    /// Show a scale set. Example: misim vmss show -g rg1 -n ss1
    Show {
        /// The scale set (resource group and name).
        #[command(flatten)]
        vmss: Named,
    },
    /// List scale sets in a resource group.
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a scale set, its instances and its system-assigned identity.
    Delete {
        /// The scale set (resource group and name).
        #[command(flatten)]
        vmss: Named,
    },
    /// Change the instance count. Example: misim vmss scale -g rg1 -n ss1 --new-capacity 3
    Scale {
        /// The scale set (resource group and name).
        #[command(flatten)]
        vmss: Named,
        /// The new number of instances.
        #[arg(long = "new-capacity")]
        new_capacity: u32,
    },
    /// List the instances with their hosts and IMDS endpoints.
    ListInstances {
        /// The scale set (resource group and name).
        #[command(flatten)]
        vmss: Named,
    },
    /// Managed identities of a scale set (they apply to every instance).
    Identity {
        /// The subcommand.
        #[command(subcommand)]
        command: VmIdentityCommand,
    },
}

/// `misim keyvault …`
#[derive(Subcommand, Debug)]
pub enum KeyvaultCommand {
    /// Create a vault (RBAC permission model). Example: misim keyvault create -g rg1 -n kv1
    Create {
        /// The vault (resource group and name).
        #[command(flatten)]
        vault: Named,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Secrets.
    Secret {
        /// The subcommand.
        #[command(subcommand)]
        command: SecretCommand,
    },
}

/// `misim keyvault secret …`
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Set a secret. Example: misim keyvault secret set --vault-name kv1 -n db-password --value s3cret
    Set {
        /// The vault.
        #[arg(long = "vault-name")]
        vault_name: String,
        /// Name.
        #[arg(short = 'n', long = "name")]
        name: String,
        /// The secret value.
        #[arg(long)]
        value: String,
    },
}

/// `misim vm identity …`
#[derive(Subcommand, Debug)]
pub enum VmIdentityCommand {
    /// Enable the system-assigned identity and/or assign user-assigned ones (step 1 of the flow).
    ///
    /// `system` (or `[system]`) means the system-assigned identity; other values are user-assigned
    /// identity resource IDs or names in the same resource group.
    ///
    /// Example: misim vm identity assign -g rg1 -n vm1 --identities system id1
    #[command(verbatim_doc_comment)]
    Assign {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
        /// Identities: `system` and/or user-assigned identity resource IDs or names.
        #[arg(long, num_args = 1.., default_values_t = vec!["system".to_string()])]
        identities: Vec<String>,
    },
    /// Disable the system-assigned identity and/or remove user-assigned ones.
    ///
    /// Example: misim vm identity remove -g rg1 -n vm1 --identities system
    #[command(verbatim_doc_comment)]
    Remove {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
        /// Identities: `system` and/or user-assigned identity resource IDs or names.
        #[arg(long, num_args = 1.., default_values_t = vec!["system".to_string()])]
        identities: Vec<String>,
    },
    /// Show the VM's identity block. Example: misim vm identity show -g rg1 -n vm1
    Show {
        /// The VM (resource group and name).
        #[command(flatten)]
        vm: Named,
    },
}

/// `misim identity …`
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Create a user-assigned identity. Example: misim identity create -g rg1 -n id1
    Create {
        /// The identity (resource group and name).
        #[command(flatten)]
        identity: Named,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Show a user-assigned identity (clientId, principalId, tenantId).
    Show {
        /// The identity (resource group and name).
        #[command(flatten)]
        identity: Named,
    },
    /// List user-assigned identities in a resource group.
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a user-assigned identity (VMs keep a dangling entry, as in Azure).
    Delete {
        /// The identity (resource group and name).
        #[command(flatten)]
        identity: Named,
    },
    /// The identity's certificate credential (for tests only).
    Credential {
        /// The subcommand.
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Federated identity credentials: tokens of an external issuer (an AKS cluster) that Azure AD
    /// exchanges for this identity's tokens (like `az identity federated-credential`).
    FederatedCredential {
        /// The subcommand.
        #[command(subcommand)]
        command: FederatedCredentialCommand,
    },
}

/// `misim identity credential …`
#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// FOR TESTS ONLY: write the identity's certificate and private key as one PEM file, so Azure SDK
    /// certificate credentials (CertificateCredential, ConfidentialClientApplication) can use it
    /// against misim's Azure AD. Azure never lets a managed identity's key leave MSRP and its hosts.
    ///
    /// Reads the credential from MSRP (--msrp, env MISIM_MSRP). Prints tenantId, clientId, the
    /// thumbprint and the file path as JSON.
    ///
    /// Example: misim identity credential export -g rg1 -n id1 --out id1.pem
    #[command(verbatim_doc_comment)]
    Export {
        /// Resource group of a user-assigned identity.
        #[arg(
            short = 'g',
            long = "resource-group",
            required_unless_present = "resource_id"
        )]
        resource_group: Option<String>,
        /// Name of a user-assigned identity.
        #[arg(short = 'n', long = "name", required_unless_present = "resource_id")]
        name: Option<String>,
        /// Any identity's resource ID instead (a VM's ID for its system-assigned identity).
        #[arg(long, conflicts_with_all = ["resource_group", "name"])]
        resource_id: Option<String>,
        /// File to write (PEM: certificate, then PKCS#8 private key).
        #[arg(long)]
        out: PathBuf,
        /// MSRP gRPC endpoint.
        #[arg(long, env = "MISIM_MSRP", default_value_t = crate::endpoints::default_url(crate::endpoints::MSRP_GRPC_OFFSET))]
        msrp: String,
        /// Directory of the admin client certificate (cert.pem, key.pem, ca.pem) for MSRP's mutual
        /// TLS; `misim up` writes it to DATA_DIR/ca/admin.
        #[arg(
            long,
            env = "MISIM_ADMIN_CERT_DIR",
            default_value = crate::endpoints::DEFAULT_ADMIN_CERT_DIR
        )]
        cert_dir: PathBuf,
    },
}

/// `misim role …`
#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Role assignments (step 4 of the flow).
    Assignment {
        /// The subcommand.
        #[command(subcommand)]
        command: RoleAssignmentCommand,
    },
    /// Role definitions.
    Definition {
        /// The subcommand.
        #[command(subcommand)]
        command: RoleDefinitionCommand,
    },
}

/// `misim role assignment …`
#[derive(Subcommand, Debug)]
pub enum RoleAssignmentCommand {
    /// Grant a role to a principal at a scope.
    ///
    /// Example: misim role assignment create --assignee-object-id <principalId> --role Reader \
    ///            --scope /subscriptions/<sub>/resourceGroups/rg1
    #[command(verbatim_doc_comment)]
    Create {
        /// Object (principal) ID of the assignee, e.g. a managed identity's principalId.
        #[arg(long)]
        assignee_object_id: String,
        /// Role name (Owner, Contributor, Reader, …) or role definition ID.
        #[arg(long)]
        role: String,
        /// Scope: subscription, resource group or resource ID (default: the subscription).
        #[arg(long)]
        scope: Option<String>,
    },
    /// List role assignments at a scope (including inherited ones), optionally for one assignee.
    List {
        /// Scope (default: the subscription); assignments on parent scopes are included.
        #[arg(long)]
        scope: Option<String>,
        /// Only assignments of this principal (object) ID.
        #[arg(long)]
        assignee: Option<String>,
    },
    /// Delete a role assignment by ID.
    Delete {
        /// Role assignment resource ID ({scope}/providers/Microsoft.Authorization/roleAssignments/{guid}).
        #[arg(long)]
        ids: String,
    },
}

/// `misim role definition …`
#[derive(Subcommand, Debug)]
pub enum RoleDefinitionCommand {
    /// List the built-in role definitions.
    List,
}

/// `misim token …`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Call the VM's IMDS token endpoint and print its JSON answer.
    ///
    /// Example: misim token get -g rg1 -n vm1 --resource https://management.azure.com/
    /// A scale-set instance: misim token get -g rg1 -n ss1 --instance-id 0
    /// An AKS pod (workload identity): misim token get -g rg1 --aks aks1 --namespace default \
    ///   --service-account app
    #[command(verbatim_doc_comment)]
    Get {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The VM, or the scale set with --instance-id.
        #[arg(
            short = 'n',
            long = "name",
            required_unless_present_any = ["webapp", "aks"]
        )]
        name: Option<String>,
        /// Call the IMDS of this instance of scale set -n (ids from `misim vmss list-instances`).
        #[arg(long)]
        instance_id: Option<String>,
        /// Call this web app's App Service identity endpoint (IDENTITY_ENDPOINT with its
        /// X-IDENTITY-HEADER) instead of a VM's IMDS.
        #[arg(long, conflicts_with_all = ["name", "instance_id"])]
        webapp: Option<String>,
        /// Resource (audience) of the token.
        #[arg(long, default_value = "https://management.azure.com/")]
        resource: String,
        /// Select a user-assigned identity by clientId.
        #[arg(long, conflicts_with_all = ["object_id", "msi_res_id"])]
        client_id: Option<String>,
        /// Select a user-assigned identity by principal (object) ID.
        #[arg(long, conflicts_with_all = ["client_id", "msi_res_id"])]
        object_id: Option<String>,
        /// Select a user-assigned identity by resource ID.
        #[arg(long, conflicts_with_all = ["client_id", "object_id"])]
        msi_res_id: Option<String>,
        /// An AKS pod's token instead (workload identity): --aks CLUSTER --namespace NS
        /// --service-account SA [--client-id ID].
        #[command(flatten)]
        aks: TokenAksArgs,
    },
}

/// `misim webapp …`
#[derive(Subcommand, Debug)]
pub enum WebappCommand {
    /// Create a web app (Microsoft.Web/sites) and place it on a host.
    ///
    /// Example: misim webapp create -g rg1 -n web1
    /// A function app: misim webapp create -g rg1 -n func1 --kind functionapp
    #[command(verbatim_doc_comment)]
    Create {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
        /// `app` or `functionapp`.
        #[arg(long, default_value = "app")]
        kind: String,
        /// Host to run the web app on (default: the host with the fewest placements).
        #[arg(long)]
        host: Option<String>,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Show a web app with its identity block and the IDENTITY_ENDPOINT / IDENTITY_HEADER the
    /// platform sets in its environment. Example: misim webapp show -g rg1 -n web1
    Show {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
    },
    /// List web apps in a resource group. Example: misim webapp list -g rg1
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a web app (its system-assigned identity goes with it). Example: misim webapp delete -g rg1 -n web1
    Delete {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
    },
    /// Managed identities of a web app (like `az webapp identity`).
    Identity {
        /// The subcommand.
        #[command(subcommand)]
        command: WebappIdentityCommand,
    },
}

/// `misim webapp identity …`
#[derive(Subcommand, Debug)]
pub enum WebappIdentityCommand {
    /// Enable the system-assigned identity and/or assign user-assigned ones.
    ///
    /// `system` (or `[system]`) means the system-assigned identity; other values are user-assigned
    /// identity resource IDs or names in the same resource group.
    ///
    /// Example: misim webapp identity assign -g rg1 -n web1 --identities [system] id1
    #[command(verbatim_doc_comment)]
    Assign {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
        /// Identities: `system` and/or user-assigned identity resource IDs or names.
        #[arg(long, num_args = 1.., default_values_t = vec!["system".to_string()])]
        identities: Vec<String>,
    },
    /// Disable the system-assigned identity and/or remove user-assigned ones.
    ///
    /// Example: misim webapp identity remove -g rg1 -n web1 --identities id1
    #[command(verbatim_doc_comment)]
    Remove {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
        /// Identities: `system` and/or user-assigned identity resource IDs or names.
        #[arg(long, num_args = 1.., default_values_t = vec!["system".to_string()])]
        identities: Vec<String>,
    },
    /// Show the web app's identity block. Example: misim webapp identity show -g rg1 -n web1
    Show {
        /// The web app (resource group and name).
        #[command(flatten)]
        site: Named,
    },
}

// ---- Arguments of the commands run by `crate::parties` ----

/// Control-plane mutual TLS of a party run alone.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Directory with this party's certificate (cert.pem, key.pem, ca.pem; see `misim certs issue`).
    /// Default: issue one at start from the CA in --ca-dir (convenient for several local processes;
    /// in containers give each party its own directory, and the CA key to none of them).
    #[arg(long, env = "MISIM_CONTROL_TLS_DIR")]
    pub control_tls_dir: Option<PathBuf>,
}

/// `misim aad`: Azure AD alone.
#[derive(Args, Debug)]
pub struct AadArgs {
    /// Directory of Azure AD's database.
    #[arg(long, env = "MISIM_AAD_DATA_DIR", default_value = "misim-data/aad")]
    pub data_dir: PathBuf,
    /// Admin gRPC listen address.
    #[arg(long, env = "MISIM_AAD_GRPC_LISTEN", default_value_t = endpoints::default_listen(endpoints::AAD_GRPC_OFFSET))]
    pub grpc_listen: SocketAddr,
    /// HTTP (token endpoint, discovery, JWKS) listen address.
    #[arg(long, env = "MISIM_AAD_HTTP_LISTEN", default_value_t = endpoints::default_listen(endpoints::AAD_HTTP_OFFSET))]
    pub http_listen: SocketAddr,
    /// Base URL others reach the HTTP API at (used in discovery documents); default http://<http-listen>.
    #[arg(long, env = "MISIM_AAD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "MISIM_TOKEN_LIFETIME", default_value_t = misim_aad::DEFAULT_TOKEN_LIFETIME_SECS)]
    pub token_lifetime: i64,
    /// Age in seconds at which the token-signing key is rotated (0 = never; default 30 days).
    #[arg(long, env = "MISIM_SIGNING_KEY_ROTATION", default_value_t = misim_aad::DEFAULT_SIGNING_KEY_ROTATION_SECS)]
    pub signing_key_rotation: i64,
    /// HTTPS listen address for the same HTTP API (discovery then names https URLs); off if unset.
    #[arg(long, env = "MISIM_AAD_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// Base URL others reach the HTTPS API at; default https://<https-listen>.
    #[arg(long, env = "MISIM_AAD_HTTPS_PUBLIC_URL")]
    pub https_public_url: Option<String>,
    /// Host names (comma-separated, e.g. arm) Azure AD may fetch federated issuers' discovery
    /// documents and keys from, besides loopback: for a container network where ARM serves the AKS
    /// cluster issuers at http://arm:7701. Host names only, no IP addresses. Default: loopback only.
    #[arg(long, env = "MISIM_AAD_FEDERATION_ISSUER_HOSTS", value_delimiter = ',')]
    pub federation_issuer_hosts: Vec<String>,
    /// TLS certificate options.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Where misim's CA lives and which extra names the HTTPS certificate covers.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Directory of misim's CA (`ca.pem`, `ca.key`; created on first start, shared by parties).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Extra names for the HTTPS certificate besides localhost/127.0.0.1/::1 (e.g. aad,arm).
    #[arg(long = "tls-name", env = "MISIM_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
}

/// `misim msrp`: MSRP alone.
#[derive(Args, Debug)]
pub struct MsrpArgs {
    /// Directory of MSRP's database.
    #[arg(long, env = "MISIM_MSRP_DATA_DIR", default_value = "misim-data/msrp")]
    pub data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "MISIM_MSRP_LISTEN", default_value_t = endpoints::default_listen(endpoints::MSRP_GRPC_OFFSET))]
    pub listen: SocketAddr,
    /// Azure AD admin gRPC URL.
    #[arg(long, env = "MISIM_AAD_GRPC", default_value_t = endpoints::default_url(endpoints::AAD_GRPC_OFFSET))]
    pub aad_grpc: String,
    /// Directory of misim's CA (used to issue this party's certificate when --control-tls-dir is unset).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Key type of identity certificates: rsa-2048 (Azure's) or ec-p256.
    #[arg(long, env = "MISIM_IDENTITY_KEY_TYPE", default_value_t = misim_core::cert::KeyType::Rsa2048)]
    pub identity_key_type: misim_core::cert::KeyType,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `misim imds`: one host (host agent + the IMDS endpoints of its VMs).
#[derive(Args, Debug)]
pub struct ImdsArgs {
    /// Host name ARM knows this host by.
    #[arg(long, env = "MISIM_HOST_NAME", default_value = "host-1")]
    pub name: String,
    /// Directory of this host's database.
    #[arg(
        long,
        env = "MISIM_HOST_DATA_DIR",
        default_value = "misim-data/hosts/host-1"
    )]
    pub data_dir: PathBuf,
    /// Host agent gRPC listen address.
    #[arg(long, env = "MISIM_HOST_LISTEN", default_value_t = endpoints::default_listen(endpoints::HOST_AGENT_OFFSET + 1))]
    pub listen: SocketAddr,
    /// Address the VMs' IMDS listeners bind to.
    #[arg(long, env = "MISIM_VM_LISTEN_IP", default_value = "127.0.0.1")]
    pub vm_listen_ip: IpAddr,
    /// MSRP gRPC URL.
    #[arg(long, env = "MISIM_MSRP", default_value_t = endpoints::default_url(endpoints::MSRP_GRPC_OFFSET))]
    pub msrp: String,
    /// Azure AD HTTP URL.
    #[arg(long, env = "MISIM_AAD_URL", default_value_t = endpoints::default_url(endpoints::AAD_HTTP_OFFSET))]
    pub aad_url: String,
    /// Shared IMDS listener for all VMs of this host, identifying the VM by source address (= its
    /// private IP), e.g. 169.254.169.254:80 inside a host container. Default: per-VM listeners only.
    #[arg(long, env = "MISIM_IMDS_LISTEN")]
    pub imds_listen: Option<SocketAddr>,
    /// Shared VM-extension listener (VM containers forward localhost:50342 here), identifying the VM
    /// by source address. Default: per-VM extension listeners only.
    #[arg(long, env = "MISIM_EXTENSION_LISTEN")]
    pub extension_listen: Option<SocketAddr>,
    /// Switch IMDS throttling off.
    #[arg(long, env = "MISIM_NO_THROTTLE")]
    pub no_throttle: bool,
    /// Identity-category requests per second per VM before 429 (Azure: 20).
    #[arg(long, env = "MISIM_IDENTITY_RPS", default_value_t = misim_imds::ImdsLimits::default().identity_per_second)]
    pub identity_rps: u32,
    /// Identity-category requests in progress at once per VM before 429 (Azure: 5).
    #[arg(long, env = "MISIM_IDENTITY_CONCURRENT", default_value_t = misim_imds::ImdsLimits::default().identity_concurrent)]
    pub identity_concurrent: u32,
    /// Requests per second per VM for the other IMDS categories before 429 (Azure: 5).
    #[arg(long, env = "MISIM_OTHER_RPS", default_value_t = misim_imds::ImdsLimits::default().other_per_second)]
    pub other_rps: u32,
    /// Send `Retry-After: SECS` with 429 answers (default: none; unknown whether Azure sends it).
    #[arg(long, env = "MISIM_RETRY_AFTER")]
    pub retry_after: Option<u32>,
    /// No per-VM IMDS listeners: serve every VM through --imds-listen (and --extension-listen),
    /// identifying it by source address. Required when VMs are on a network (containers): per-VM
    /// listeners tell VMs apart by port and are loopback-only.
    #[arg(long, env = "MISIM_NO_VM_LISTENERS")]
    pub no_vm_listeners: bool,
    /// Ports of the VMs' own IMDS listeners, START-END (default: any free port).
    #[arg(long, env = "MISIM_VM_PORTS")]
    pub vm_ports: Option<String>,
    /// Directory of misim's CA (used to issue this host's certificate when --control-tls-dir is unset).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `misim arm`: ARM alone.
#[derive(Args, Debug)]
pub struct ArmArgs {
    /// Directory of ARM's database.
    #[arg(long, env = "MISIM_ARM_DATA_DIR", default_value = "misim-data/arm")]
    pub data_dir: PathBuf,
    /// Control-plane gRPC listen address.
    #[arg(long, env = "MISIM_ARM_GRPC_LISTEN", default_value_t = endpoints::default_listen(endpoints::ARM_GRPC_OFFSET))]
    pub grpc_listen: SocketAddr,
    /// REST surface listen address.
    #[arg(long, env = "MISIM_ARM_REST_LISTEN", default_value_t = endpoints::default_listen(endpoints::ARM_REST_OFFSET))]
    pub rest_listen: SocketAddr,
    /// MSRP gRPC URL.
    #[arg(long, env = "MISIM_MSRP", default_value_t = endpoints::default_url(endpoints::MSRP_GRPC_OFFSET))]
    pub msrp: String,
    /// Azure AD admin gRPC URL.
    #[arg(long, env = "MISIM_AAD_GRPC", default_value_t = endpoints::default_url(endpoints::AAD_GRPC_OFFSET))]
    pub aad_grpc: String,
    /// Azure AD HTTP URL (discovery and JWKS).
    #[arg(long, env = "MISIM_AAD_URL", default_value_t = endpoints::default_url(endpoints::AAD_HTTP_OFFSET))]
    pub aad_url: String,
    /// A host VMs can be placed on, as NAME=AGENT_URL; repeat for more hosts.
    #[arg(
        long = "host",
        env = "MISIM_HOSTS",
        value_delimiter = ',',
        default_values_t = [format!("host-1={}", endpoints::default_url(endpoints::HOST_AGENT_OFFSET + 1))]
    )]
    pub hosts: Vec<String>,
    /// Require `authorization: Bearer TOKEN` on ARM's gRPC API (machines shared with other users;
    /// clients set MISIM_ARM_TOKEN).
    #[arg(
        long = "api-token",
        env = "MISIM_ARM_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// URL others reach the REST surface at when it differs from --rest-listen (e.g.
    /// http://arm:7701 in containers, where the listener is 0.0.0.0:7701): used in the URLs ARM hands
    /// out, such as AKS OIDC issuer URLs (`iss` of service-account tokens) and Key Vault endpoints.
    /// Default: http://<rest-listen>.
    #[arg(long, env = "MISIM_ARM_PUBLIC_REST_URL")]
    pub public_rest_url: Option<String>,
    /// HTTPS listen address for the REST surface (TLS forwarded to --rest-listen); off if unset.
    #[arg(long, env = "MISIM_ARM_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// TLS certificate options.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

// ---- Arguments of the commands run by `crate::client::ad` ----

/// `misim ad …`: where Azure AD is and which certificate to call it with, and the subcommand.
#[derive(Args, Debug)]
pub struct AdArgs {
    /// Where Azure AD's admin gRPC API is.
    #[command(flatten)]
    pub conn: AadConn,
    /// The subcommand.
    #[command(subcommand)]
    pub command: AdCommand,
}

/// How the `misim ad` verbs reach Azure AD.
#[derive(Args, Debug, Clone)]
pub struct AadConn {
    /// Azure AD admin gRPC endpoint (aad_grpc in DATA_DIR/endpoints.json). Default: aad_grpc from
    /// the endpoints.json of the data directory that holds --cert-dir (DATA_DIR/ca/admin), else
    /// http://127.0.0.1:7703.
    #[arg(long, global = true, env = "MISIM_AAD_GRPC")]
    pub aad: Option<String>,
    /// Directory of the admin client certificate (cert.pem, key.pem, ca.pem) for Azure AD's mutual
    /// TLS; `misim up` writes it to DATA_DIR/ca/admin.
    #[arg(
        long,
        global = true,
        env = "MISIM_ADMIN_CERT_DIR",
        default_value = crate::endpoints::DEFAULT_ADMIN_CERT_DIR
    )]
    pub cert_dir: PathBuf,
    /// Tenant ID (default: misim's default tenant, the one the default subscription trusts).
    #[arg(long, global = true)]
    pub tenant: Option<String>,
}

/// `misim ad …`
#[derive(Subcommand, Debug)]
pub enum AdCommand {
    /// App registrations, their app roles and app-role assignments (like `az ad app`).
    App {
        /// The subcommand.
        #[command(subcommand)]
        command: AppCommand,
    },
    /// The service principal of an app registration (like `az ad sp`).
    Sp {
        /// The subcommand.
        #[command(subcommand)]
        command: SpCommand,
    },
}

/// `misim ad app …`
#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Register an application (and its service principal) that managed identities can get tokens
    /// for. Prints the application; its appId and identifier URI both name it as a token resource.
    ///
    /// Each --app-role defines an app role that service principals can be assigned
    /// (allowedMemberTypes ["Application"]); its value is what the token's `roles` claim carries.
    /// Identifier URIs: api://NAME, or https:// on the tenant's domain (*.onmicrosoft.com).
    ///
    /// Example: misim ad app create --display-name orders-api --identifier-uris api://orders-api \
    ///            --app-role Orders.Read --app-role Orders.Write
    #[command(verbatim_doc_comment)]
    Create {
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// Identifier (application ID) URIs, e.g. api://orders-api.
        #[arg(long = "identifier-uris", visible_alias = "identifier-uri", num_args = 1..)]
        identifier_uris: Vec<String>,
        /// An app role value to define (repeat for several), e.g. Orders.Read.
        #[arg(long = "app-role")]
        app_roles: Vec<String>,
        /// api.requestedAccessTokenVersion: 1 or 2 (default null = v1 tokens, from either
        /// endpoint, with aud = the resource as requested; 2 = v2 tokens with aud = appId).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=2))]
        requested_access_token_version: Option<i32>,
    },
    /// Show an application. Example: misim ad app show --id api://orders-api
    Show {
        /// appId, object ID or identifier URI.
        #[arg(long)]
        id: String,
    },
    /// List the tenant's applications.
    List,
    /// Delete an application, its service principal and the app-role assignments to it.
    ///
    /// Example: misim ad app delete --id api://orders-api
    #[command(verbatim_doc_comment)]
    Delete {
        /// appId, object ID or identifier URI.
        #[arg(long)]
        id: String,
    },
    /// App-role assignments of the application's roles to managed identities (Graph
    /// appRoleAssignedTo).
    RoleAssignment {
        /// The subcommand.
        #[command(subcommand)]
        command: AppRoleAssignmentCommand,
    },
}

/// `misim ad app role-assignment …`
#[derive(Subcommand, Debug)]
pub enum AppRoleAssignmentCommand {
    /// Assign one of the application's app roles to a managed identity.
    ///
    /// The identity's tokens for the application then carry the role in `roles`. IMDS caches
    /// tokens per resource (up to 24 h, as Azure does): a token fetched before the assignment
    /// shows the role only after it expires or with bypass_cache=true.
    ///
    /// Example: misim ad app role-assignment create --principal-id <identity principalId> \
    ///            --app api://orders-api --role Orders.Read
    #[command(verbatim_doc_comment)]
    Create {
        /// principalId (service principal object ID) of the managed identity.
        #[arg(long)]
        principal_id: String,
        /// The application: appId, object ID or identifier URI.
        #[arg(long)]
        app: String,
        /// The app role: its value (e.g. Orders.Read) or its ID.
        #[arg(long)]
        role: String,
    },
    /// List app-role assignments, optionally of one application and/or one principal.
    List {
        /// Only assignments to this application (appId, object ID or identifier URI).
        #[arg(long)]
        app: Option<String>,
        /// Only assignments of this principal (object) ID.
        #[arg(long)]
        principal_id: Option<String>,
    },
    /// Delete an app-role assignment by ID.
    Delete {
        /// The assignment's ID.
        #[arg(long)]
        id: String,
    },
}

/// `misim ad sp …`
#[derive(Subcommand, Debug)]
pub enum SpCommand {
    /// Show an application's service principal (the assignments' resourceId).
    ///
    /// Example: misim ad sp show --id api://orders-api
    #[command(verbatim_doc_comment)]
    Show {
        /// The application's appId, object ID or identifier URI.
        #[arg(long)]
        id: String,
    },
}

// ---- Arguments of the commands run by `crate::client::aks` ----

/// `misim aks …`
#[derive(Subcommand, Debug)]
pub enum AksCommand {
    /// Create an AKS cluster with the OIDC issuer and workload identity enabled.
    ///
    /// Example: misim aks create -g rg1 -n aks1
    #[command(verbatim_doc_comment)]
    Create {
        /// The cluster (resource group and name).
        #[command(flatten)]
        cluster: Named,
        /// Location (default: the resource group's).
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Show a cluster (oidcIssuerProfile.issuerUrl is its issuer). Example: misim aks show -g rg1 -n aks1
    Show {
        /// The cluster (resource group and name).
        #[command(flatten)]
        cluster: Named,
    },
    /// Delete a cluster; its issuer stops answering. Example: misim aks delete -g rg1 -n aks1
    Delete {
        /// The cluster (resource group and name).
        #[command(flatten)]
        cluster: Named,
    },
    /// Issue a projected service-account token, as the kubelet writes it into a pod that uses
    /// workload identity (AZURE_FEDERATED_TOKEN_FILE). Prints the token, or writes it to --out.
    ///
    /// Example: misim aks get-token -g rg1 -n aks1 --namespace default --service-account app \
    ///            --out /tmp/azure-identity-token
    /// Keep rotating it like the kubelet (at 80% of its lifetime): add --watch
    #[command(verbatim_doc_comment)]
    GetToken {
        /// The cluster (resource group and name).
        #[command(flatten)]
        cluster: Named,
        /// The service account and the token's shape.
        #[command(flatten)]
        sa: ServiceAccountArgs,
        /// Write the token to this file (atomically replaced; mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep running and write a new token whenever 80% of the current one's lifetime has
        /// passed (needs --out).
        #[arg(long, requires = "out")]
        watch: bool,
    },
}

/// Which service account a token is for, and its shape.
#[derive(Args, Debug, Clone)]
pub struct ServiceAccountArgs {
    /// Kubernetes namespace of the service account.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Service account name.
    #[arg(long)]
    pub service_account: String,
    /// Token audience (repeatable).
    #[arg(long = "audience", default_value = TOKEN_EXCHANGE_AUDIENCE)]
    pub audiences: Vec<String>,
    /// Token lifetime in seconds (600 to 86400; AKS projects 3600).
    #[arg(long, default_value_t = 3600)]
    pub expiration_seconds: i64,
    /// Pod name recorded in the token's kubernetes.io claim.
    #[arg(long)]
    pub pod: Option<String>,
}

/// `misim identity federated-credential …`
#[derive(Subcommand, Debug)]
pub enum FederatedCredentialCommand {
    /// Create (or replace) a federated identity credential on a user-assigned identity.
    ///
    /// Example: misim identity federated-credential create -g rg1 --identity-name id1 -n aks1-app \
    ///            --issuer "$ISSUER" --subject system:serviceaccount:default:app
    #[command(verbatim_doc_comment)]
    Create {
        /// The credential (resource group, identity and name).
        #[command(flatten)]
        credential: FicNamed,
        /// The issuer URL (exactly as the token's iss; an AKS cluster's oidcIssuerProfile.issuerUrl).
        #[arg(long)]
        issuer: String,
        /// The subject (for AKS: system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT).
        #[arg(long)]
        subject: String,
        /// Accepted audience.
        #[arg(long = "audiences", default_value = TOKEN_EXCHANGE_AUDIENCE)]
        audiences: Vec<String>,
    },
    /// List an identity's federated identity credentials.
    /// Example: misim identity federated-credential list -g rg1 --identity-name id1
    List {
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The user-assigned identity.
        #[arg(long)]
        identity_name: String,
    },
    /// Show one. Example: misim identity federated-credential show -g rg1 --identity-name id1 -n aks1-app
    Show {
        /// The credential (resource group, identity and name).
        #[command(flatten)]
        credential: FicNamed,
    },
    /// Delete one. Example: misim identity federated-credential delete -g rg1 --identity-name id1 -n aks1-app
    Delete {
        /// The credential (resource group, identity and name).
        #[command(flatten)]
        credential: FicNamed,
    },
}

/// A federated identity credential: group, identity and name.
#[derive(Args, Debug, Clone)]
pub struct FicNamed {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// The user-assigned identity.
    #[arg(long)]
    pub identity_name: String,
    /// The credential's name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

/// The options `misim token get` takes for an AKS pod (`--aks NAME`).
#[derive(Args, Debug, Clone)]
pub struct TokenAksArgs {
    /// Get the token as a pod of this AKS cluster would: its projected service-account token,
    /// exchanged at Azure AD for the identity's token (workload identity federation).
    #[arg(long, conflicts_with_all = ["name", "instance_id", "webapp", "object_id", "msi_res_id"])]
    pub aks: Option<String>,
    /// With --aks: the pod's namespace.
    #[arg(long, requires = "aks", default_value = "default")]
    pub namespace: String,
    /// With --aks: the pod's service account.
    #[arg(long, requires = "aks")]
    pub service_account: Option<String>,
    /// With --aks: Azure AD's HTTP endpoint (aad in DATA_DIR/endpoints.json).
    #[arg(long, env = "MISIM_AAD", default_value_t = crate::endpoints::default_url(crate::endpoints::AAD_HTTP_OFFSET))]
    pub aad_url: String,
}

// ---- Arguments of the commands run by `crate::client::bench` ----

/// `misim bench …`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load-test a VM's IMDS token endpoint: requests/s, p50/p90/p99 latency, errors.
    ///
    /// IMDS throttles each VM as Azure does (20 identity requests/s, 5 at once) and answers 429
    /// beyond that: start misim with `misim up --no-throttle` to measure throughput.
    ///
    /// Example: misim bench token --vm vm1 -g rg1 --concurrency 32 --duration 10s
    #[command(verbatim_doc_comment)]
    Token(TokenBenchArgs),
    /// Create VMs or user-assigned identities over one ARM connection, timing every call (used by
    /// bench/run to grow a system to thousands of VMs). Prints JSON.
    ///
    /// Example: misim bench populate -g rg1 --vms 1000 --concurrency 4
    /// Identities assigned to a VM: misim bench populate -g rg1 --identities 1000 --assign-to vm1
    #[command(verbatim_doc_comment)]
    Populate(PopulateArgs),
}

/// `misim bench token` options.
#[derive(Args, Debug)]
pub struct TokenBenchArgs {
    /// The VM whose IMDS endpoint to load (from `misim vm show`).
    #[arg(long = "vm")]
    pub vm: String,
    /// Resource group of the VM.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// Connections (requests in flight at once).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub concurrency: u32,
    /// How long to send requests: `10s`, `500ms`, `1m` or seconds.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_bench_duration)]
    pub duration: Duration,
    /// Ask IMDS to skip its token cache (`bypass_cache=true`): every request is a new Azure AD token.
    #[arg(long)]
    pub bypass_cache: bool,
    /// Resource (audience) of the token.
    #[arg(long, default_value = "https://management.azure.com/")]
    pub resource: String,
    /// Select a user-assigned identity by clientId.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Send at this total rate (requests/s) instead of as fast as possible; latency is then measured
    /// from each request's scheduled time, so a stalled server is not hidden (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `misim bench populate` options.
#[derive(Args, Debug)]
pub struct PopulateArgs {
    /// Resource group (created when missing, in westeurope).
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// Number of VMs to create, named PREFIX-START … PREFIX-(START+N-1).
    #[arg(long, default_value_t = 0)]
    pub vms: u32,
    /// Number of user-assigned identities to create, named PREFIX-START …
    #[arg(long, default_value_t = 0)]
    pub identities: u32,
    /// Name prefix (default: `bvm` for VMs, `bid` for identities).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Index of the first name.
    #[arg(long, default_value_t = 0)]
    pub start: u32,
    /// ARM calls in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Assign the identities created to this VM (in batches of --batch per call).
    #[arg(long)]
    pub assign_to: Option<String>,
    /// Identities per AssignVmIdentity call with --assign-to.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Host to place the VMs on (default: ARM's choice).
    #[arg(long)]
    pub host: Option<String>,
    /// After creating, time this many `vm show` (GetVm) calls on VMs of this run.
    #[arg(long, default_value_t = 0)]
    pub show_samples: u32,
}

// ---- Arguments of the commands run by `crate::client::clock` ----

/// `misim clock …`
#[derive(clap::Args, Debug)]
pub struct ClockArgs {
    /// Where ARM is.
    #[command(flatten)]
    pub conn: ArmConn,
    /// The subcommand.
    #[command(subcommand)]
    pub command: ClockCommand,
}

/// `misim clock` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClockCommand {
    /// The simulated time and whether it is manual.
    Show,
    /// Move a manual clock forward, e.g. `25h`, `46d`, `1d12h`, `90s` (units s, m, h, d, w).
    ///
    /// Every party sees the new time at once: expired tokens are fetched anew by IMDS, MSRP renews
    /// certificates older than 45 days, Azure AD rotates a signing key older than 30 days.
    ///
    /// Example: misim clock advance 50d
    #[command(verbatim_doc_comment)]
    Advance {
        /// How far, e.g. 25h or 50d.
        by: String,
    },
    /// Set a manual clock to a time (RFC 3339 UTC such as 2027-01-31T00:00:00Z, or epoch seconds);
    /// it never moves backwards.
    Set {
        /// The time.
        time: String,
    },
}

// ---- Arguments of the commands run by `crate::client::events` ----

/// `misim events [--follow] [--vm NAME] [--party aad] [--json]`
#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    /// Keep printing events as they are recorded (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only requests about this VM (its name).
    #[arg(long)]
    pub vm: Option<String>,
    /// Only requests served by this party: arm, aad, msrp, imds (every host's IMDS), host-1, ...
    #[arg(long)]
    pub party: Option<String>,
    /// Only operations containing this text, e.g. /oauth2/ or GetCredential.
    #[arg(long)]
    pub operation: Option<String>,
    /// Only the flow with this W3C trace ID (or prefix).
    #[arg(long)]
    pub trace_id: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// One JSON object per event (a JSON array without --follow).
    #[arg(long)]
    pub json: bool,
    /// Data directory of `misim up` (endpoints.json; ca/admin for the parties' control ports).
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where ARM is.
    #[command(flatten)]
    pub conn: ArmConn,
}

// ---- Arguments of the commands run by `crate::client::fault` ----

/// `misim fault …`
#[derive(clap::Args, Debug)]
pub struct FaultArgs {
    /// Where ARM is.
    #[command(flatten)]
    pub conn: ArmConn,
    /// The subcommand.
    #[command(subcommand)]
    pub command: FaultCommand,
}

/// `misim fault` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum FaultCommand {
    /// Add a rule: what it matches, what it injects, how long it lasts.
    ///
    /// Examples:
    ///   misim fault add --party vm:vm1 --endpoint imds --status 410 --count 2
    ///   misim fault add --party host-1 --endpoint imds --status 429 --retry-after 3 --count 1
    ///   misim fault add --party aad --endpoint aad-token --status 503 --probability 0.3 --seed 7
    ///   misim fault add --party msrp --path /misim.msrp.v1.Msrp/GetCredential --grpc-code 14
    ///   misim fault add --party arm --endpoint arm-rest --latency 500ms --duration 10m
    ///   misim fault add --party vm:vm1 --endpoint imds --reset --count 1
    #[command(verbatim_doc_comment)]
    Add(Box<AddArgs>),
    /// List the rules with their hit counts.
    List,
    /// Remove one rule (--id) or all; --hits forgets the recorded hits too.
    Clear {
        /// The rule (default: all).
        #[arg(long)]
        id: Option<String>,
        /// Also forget recorded hits.
        #[arg(long)]
        hits: bool,
    },
    /// The recorded injections (simulated and wall-clock time, party, path, caller, fault).
    Hits {
        /// Only this rule's.
        #[arg(long)]
        id: Option<String>,
    },
}

/// `misim fault add` options.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Receiving party: arm, aad, msrp, a host name (its agent and IMDS listeners) or vm:NAME.
    #[arg(long, default_value = "")]
    pub party: String,
    /// imds, aad-token, arm-rest or grpc.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Path prefix, e.g. /metadata/identity/oauth2/token or /misim.msrp.v1.Msrp/GetCredential.
    #[arg(long, default_value = "")]
    pub path: String,
    /// HTTP method.
    #[arg(long, default_value = "")]
    pub method: String,
    /// Substring of the identity asked for (client_id, object_id, msi_res_id, mi_res_id).
    #[arg(long, default_value = "")]
    pub identity: String,
    /// Substring of the resource or scope asked for.
    #[arg(long, default_value = "")]
    pub resource: String,
    /// Substring of the caller's address or User-Agent.
    #[arg(long, default_value = "")]
    pub caller: String,

    /// Answer with this HTTP status and the surface's Azure error body.
    #[arg(long, group = "kind")]
    pub status: Option<u16>,
    /// Answer with this gRPC status code (number, e.g. 14 for UNAVAILABLE).
    #[arg(long, group = "kind")]
    pub grpc_code: Option<i32>,
    /// Close the connection without an answer.
    #[arg(long, group = "kind")]
    pub close: bool,
    /// Start the answer, then abort the connection.
    #[arg(long, group = "kind")]
    pub reset: bool,
    /// Answer 200 with a truncated JSON body.
    #[arg(long, group = "kind")]
    pub malformed: bool,
    /// Delay (e.g. 500ms, 2s); alone, the answer is otherwise normal.
    #[arg(long)]
    pub latency: Option<String>,
    /// Retry-After header, seconds.
    #[arg(long, default_value_t = 0)]
    pub retry_after: u32,
    /// Body replacing Azure's error body.
    #[arg(long, default_value = "")]
    pub body: String,
    /// gRPC message, or the description in the error body.
    #[arg(long, default_value = "")]
    pub message: String,

    /// At most this many injections.
    #[arg(long, default_value_t = 0)]
    pub count: u32,
    /// For this long on the simulated clock (e.g. 10m, 2h).
    #[arg(long)]
    pub duration: Option<String>,
    /// Chance per matching request (0-1).
    #[arg(long, default_value_t = 0.0)]
    pub probability: f64,
    /// Seed of the rule's generator (runs repeat with the same seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

// ---- Arguments of the commands run by `crate::client::trace` ----

/// `misim trace …`
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: TraceCommand,
}

/// Where the spans are read from.
#[derive(clap::Args, Debug, Clone)]
pub struct TraceSources {
    /// Data directory of `misim up`: spans are read from ARM's REST listener (arm_rest in
    /// DATA_DIR/endpoints.json), which under `misim up` holds every party's spans.
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: std::path::PathBuf,
    /// Base URL of a party's /debug/traces (ARM's REST listener, or a party's --metrics-listen);
    /// repeat to merge parties run as separate processes. Replaces the
    /// endpoints.json default.
    #[arg(long = "collect", env = "MISIM_TRACE_SOURCES", value_delimiter = ',')]
    pub collect: Vec<String>,
    /// Bearer token when ARM was started with --arm-api-token.
    #[arg(long, env = "MISIM_ARM_TOKEN", hide_env_values = true)]
    pub arm_token: Option<String>,
}

/// Diagram formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Mermaid sequenceDiagram (GitHub and docs render it).
    Mermaid,
    /// Plain text for terminals.
    Text,
    /// A standalone SVG image.
    Svg,
}

/// `misim trace` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TraceCommand {
    /// Draw one flow as a sequence diagram: by default the last token a VM got from Azure AD, with
    /// the enable flow of its identity before it (steps 1-3), its role assignments (4) and the
    /// calls made with it (7).
    ///
    /// Example: misim trace show --last --format mermaid
    #[command(verbatim_doc_comment)]
    Show {
        /// The last token's flow (the default).
        #[arg(long, conflicts_with_all = ["vm", "trace_id"])]
        last: bool,
        /// The last token's flow of this VM (name or resource ID).
        #[arg(long, conflicts_with = "trace_id")]
        vm: Option<String>,
        /// Exactly this trace (32 hex digits, or a unique prefix).
        #[arg(long)]
        trace_id: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Where to read spans.
        #[command(flatten)]
        sources: TraceSources,
    },
    /// List the flows kept in memory, newest last: trace ID, start (UTC), summary.
    List {
        /// Where to read spans.
        #[command(flatten)]
        sources: TraceSources,
    },
}

// ---- Arguments of the commands run by `crate::scenario::cli` ----

/// `misim scenario …`
#[derive(clap::Args, Debug)]
pub struct ScenarioArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: ScenarioCommand,
}

/// `misim scenario` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Run scenario files: each step with pass/fail and a diff for failures; exits non-zero when
    /// any step fails.
    ///
    /// Example: misim scenario run scenarios/*.yaml --embedded --junit out.xml
    #[command(verbatim_doc_comment)]
    Run {
        /// Scenario files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Start misim in this process on free ports (a manual clock when a scenario needs one)
        /// instead of using a running one; each file gets its own system.
        #[arg(long)]
        embedded: bool,
        /// Write a JUnit XML report here (a test suite per scenario, a test case per step).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print the results as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Data directory of the running misim (endpoints.json).
        #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Check scenario files against the schema; errors name the line.
    Validate {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario documents (docs/scenario.schema.json).
    Schema,
}

// ---- Arguments of the commands run by `crate::doctor` ----

/// `misim doctor` options.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Data directory of the running system (its endpoints.json names ARM's gRPC endpoint).
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// ARM's gRPC endpoint (instead of arm_grpc in endpoints.json), e.g. http://127.0.0.1:7700.
    #[arg(long)]
    pub arm: Option<String>,
    /// Wait up to this many seconds for the system to become consistent (0: report once).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// ARM's API token, when ARM was started with one.
    #[arg(long, env = "MISIM_ARM_TOKEN", hide_env_values = true)]
    pub arm_token: Option<String>,
}

// ---- Arguments of the commands run by `crate::repair` ----

/// `misim repair` options.
#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// Data directory of the stopped system.
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Whose store: arm, msrp, aad, or host:NAME (e.g. host:host-1).
    #[arg(long)]
    pub party: String,
}

/// Parses `misim bench token --duration`: `10s`, `250ms`, `2m` or a plain number of seconds.
pub fn parse_bench_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s, 500ms or 1m"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}
