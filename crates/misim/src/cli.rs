//! The command line: `misim up`, one-party commands, and client verbs that mirror `az`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::parties::{AadArgs, ArmArgs, ImdsArgs, MsrpArgs};

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
        command: crate::client::aks::AksCommand,
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
    Ad(crate::client::ad::AdArgs),
    /// Flows as sequence diagrams, from the spans the parties keep in memory (docs/observability.md).
    ///
    /// Example: misim trace show --last --format mermaid
    #[command(verbatim_doc_comment)]
    Trace(crate::client::trace::TraceArgs),
    /// The requests the parties recorded: time (simulated and wall), party, caller, operation,
    /// parameters (secrets redacted), outcome, latency and trace ID (docs/scenarios.md).
    ///
    /// Example: misim events --vm vm1 --follow
    #[command(verbatim_doc_comment)]
    Events(crate::client::events::EventsArgs),
    /// Run or check scenario files: steps with expectations, against a running misim or an
    /// embedded one (docs/scenarios.md).
    ///
    /// Example: misim scenario run scenarios/*.yaml --embedded --junit out.xml
    #[command(verbatim_doc_comment)]
    Scenario(crate::scenario::cli::ScenarioArgs),
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
        command: crate::client::bench::BenchCommand,
    },
    /// The simulated clock every party reads: show it, advance it (`misim up --clock manual`).
    ///
    /// Example: misim clock advance 25h
    #[command(verbatim_doc_comment)]
    Clock(crate::client::clock::ClockArgs),
    /// Fault injection: HTTP/gRPC errors, latency, closed connections on any party's endpoint.
    ///
    /// Example: misim fault add --party vm:vm1 --endpoint imds --status 429 --count 2
    #[command(verbatim_doc_comment)]
    Fault(crate::client::fault::FaultArgs),
    /// Report every difference between ARM's desired state and MSRP, Azure AD and the hosts
    /// (Health/Consistency), and whether it is converging; fails while any remain (--wait N:
    /// wait up to N s for none).
    ///
    /// Example: misim doctor --wait 30
    #[command(verbatim_doc_comment)]
    Doctor(crate::doctor::DoctorArgs),
    /// Move a party's damaged store aside (never deleted) so it starts empty; ARM re-creates what
    /// it knows. Stop misim first.
    ///
    /// Example: misim repair --data-dir /tmp/misim --party msrp
    #[command(verbatim_doc_comment)]
    Repair(crate::repair::RepairArgs),
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

/// `misim vm extension …`
#[derive(Subcommand, Debug)]
pub enum VmExtensionCommand {
    /// Install or re-run the managed-identity VM extension.
    ///
    /// Example: misim vm extension set -g rg1 --vm-name vm1 -n ManagedIdentityExtensionForLinux \
    ///            --publisher Microsoft.ManagedIdentity --version 1.0 --settings '{"port":50342}'
    #[command(verbatim_doc_comment)]
    Set {
        /// Resource group of the VM.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The VM to install the extension on.
        #[arg(long = "vm-name")]
        vm_name: String,
        /// Extension name (= type): ManagedIdentityExtensionForLinux or ManagedIdentityExtensionForWindows.
        #[arg(short = 'n', long = "name")]
        name: String,
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
        /// Resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The VM.
        #[arg(long = "vm-name")]
        vm_name: String,
        /// Name.
        #[arg(short = 'n', long = "name")]
        name: String,
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
        command: crate::client::aks::FederatedCredentialCommand,
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
        aks: crate::client::aks::TokenAksArgs,
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
