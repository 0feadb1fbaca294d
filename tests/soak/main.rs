//! Crash soak (issue #15, "Nothing lost, nothing silent"): N workers create, assign, remove and delete
//! identities, VMs, scale sets and role assignments through ARM's gRPC API while a killer `kill -9`s
//! the whole `misim up` (phase 1) or one party of the separate-process mode (phase 2: `misim aad`,
//! `misim msrp`, `misim imds` x2, `misim arm`). After every restart on the same data directory it
//! checks the invariants of docs/reliability.md and prints a summary.
//!
//! Short form (scripts/test.sh): `cargo test -p misim-tests --test soak`
//! (200 operations, 10 kills). Long form: `cargo test -p misim-tests --test soak -- --ops 2000 --kills 50`.
//! Uses the real binary (`MISIM_BIN`, default `target/debug/misim`): kills are real SIGKILLs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::arm as pb;
use misim_proto::arm::arm_client::ArmClient;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::tonic::transport::{Channel, Endpoint};
use serde_json::Value;

/// Convergence deadline after a restart (issue #15).
const CONVERGENCE: Duration = Duration::from_secs(5);
/// Parties of the separate-process mode, in start order.
const PARTIES: [&str; 5] = ["aad", "msrp", "host-1", "host-2", "arm"];

// ---------------------------------------------------------------------------------------------
// Arguments and randomness
// ---------------------------------------------------------------------------------------------

struct Args {
    ops: usize,
    kills: usize,
    workers: usize,
    seed: u64,
    modes: Vec<Mode>,
    keep: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Up,
    Parties,
}

fn parse_args() -> Args {
    let mut a = Args {
        ops: 200,
        kills: 10,
        workers: 4,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        modes: vec![Mode::Up, Mode::Parties],
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val =
            |name: &str| -> String { it.next().unwrap_or_else(|| panic!("{name} needs a value")) };
        match arg.as_str() {
            "--ops" => a.ops = val("--ops").parse().expect("--ops N"),
            "--kills" => a.kills = val("--kills").parse().expect("--kills N"),
            "--workers" => a.workers = val("--workers").parse().expect("--workers N"),
            "--seed" => a.seed = val("--seed").parse().expect("--seed N"),
            "--keep" => a.keep = true,
            "--mode" => {
                a.modes = match val("--mode").as_str() {
                    "up" => vec![Mode::Up],
                    "parties" => vec![Mode::Parties],
                    "both" => vec![Mode::Up, Mode::Parties],
                    m => panic!("--mode up|parties|both, not {m}"),
                }
            }
            // cargo test passes harness flags through; ignore them.
            "--nocapture" | "--quiet" | "-q" | "--color" => {}
            other if other.starts_with('-') => {
                eprintln!("soak: ignoring unknown flag {other}");
            }
            _ => {}
        }
    }
    a
}

/// SplitMix64: a tiny seeded generator, so a seed reproduces the operation mix.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The processes
// ---------------------------------------------------------------------------------------------

struct Cluster {
    mode: Mode,
    bin: PathBuf,
    dir: PathBuf,
    base: u16,
    children: BTreeMap<String, Child>,
}

impl Cluster {
    fn url(&self, off: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + off)
    }
    fn arm_grpc(&self) -> String {
        self.url(0)
    }
    fn aad_http(&self) -> String {
        self.url(2)
    }
    fn aad_grpc(&self) -> String {
        self.url(3).replace("http://", "https://")
    }
    fn msrp_grpc(&self) -> String {
        self.url(4).replace("http://", "https://")
    }
    fn addr(&self, off: u16) -> String {
        format!("127.0.0.1:{}", self.base + off)
    }

    fn command(&self, party: &str) -> Command {
        let mut c = Command::new(&self.bin);
        let d = &self.dir;
        let ca = d.join("ca");
        let s = |p: &Path| p.display().to_string();
        match party {
            "up" => {
                c.args(["up", "--data-dir", &s(d), "--hosts", "2"]);
                c.args(["--base-port", &self.base.to_string()]);
            }
            "aad" => {
                c.args(["aad", "--data-dir", &s(&d.join("aad")), "--ca-dir", &s(&ca)]);
                c.args([
                    "--grpc-listen",
                    &self.addr(3),
                    "--http-listen",
                    &self.addr(2),
                ]);
                c.args(["--public-url", &self.aad_http()]);
            }
            "msrp" => {
                c.args([
                    "msrp",
                    "--data-dir",
                    &s(&d.join("msrp")),
                    "--ca-dir",
                    &s(&ca),
                ]);
                c.args(["--listen", &self.addr(4), "--aad-grpc", &self.url(3)]);
            }
            "host-1" | "host-2" => {
                let n: u16 = if party == "host-1" { 1 } else { 2 };
                let ports = format!(
                    "{}-{}",
                    self.base + 100 + (n - 1) * 500,
                    self.base + 599 + (n - 1) * 500
                );
                c.args(["imds", "--name", party, "--ca-dir", &s(&ca)]);
                c.args(["--data-dir", &s(&d.join("hosts").join(party))]);
                c.args(["--listen", &self.addr(10 + n), "--vm-ports", &ports]);
                c.args(["--msrp", &self.url(4), "--aad-url", &self.aad_http()]);
            }
            "arm" => {
                c.args(["arm", "--data-dir", &s(&d.join("arm")), "--ca-dir", &s(&ca)]);
                c.args([
                    "--grpc-listen",
                    &self.addr(0),
                    "--rest-listen",
                    &self.addr(1),
                ]);
                c.args(["--msrp", &self.url(4), "--aad-grpc", &self.url(3)]);
                c.args(["--aad-url", &self.aad_http()]);
                c.args([
                    "--host",
                    &format!("host-1={},host-2={}", self.url(11), self.url(12)),
                ]);
            }
            p => panic!("unknown party {p}"),
        }
        // Only loopback, never a proxy; no inherited misim settings.
        for (k, _) in std::env::vars() {
            if k.starts_with("MISIM_") {
                c.env_remove(k);
            }
        }
        c.env("NO_PROXY", "*").env("MISIM_LOG", "warn");
        c
    }

    fn spawn(&mut self, party: &str) {
        std::fs::create_dir_all(self.dir.join("logs")).expect("logs dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{party}.log")))
            .expect("log file");
        let child = self
            .command(party)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {party}: {e}", self.bin.display()));
        self.children.insert(party.to_string(), child);
    }

    fn parties(&self) -> Vec<&'static str> {
        match self.mode {
            Mode::Up => vec!["up"],
            Mode::Parties => PARTIES.to_vec(),
        }
    }

    async fn start_all(&mut self) {
        for p in self.parties() {
            self.spawn(p);
            if self.mode == Mode::Parties {
                self.wait_port(p).await;
            }
        }
        if self.mode == Mode::Parties && !self.dir.join("ca/admin/cert.pem").exists() {
            let st = Command::new(&self.bin)
                .args(["certs", "issue", "--role", "admin", "--ca-dir"])
                .arg(self.dir.join("ca"))
                .arg("--out")
                .arg(self.dir.join("ca/admin"))
                .stdout(Stdio::null())
                .status()
                .expect("misim certs issue");
            assert!(st.success(), "misim certs issue --role admin failed");
        }
    }

    /// `kill -9` of one party (SIGKILL: std's Child::kill), reaped.
    fn kill(&mut self, party: &str) {
        if let Some(mut c) = self.children.remove(party) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kill_all(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }

    /// Waits until `party`'s main listener accepts connections (or the process died: panic).
    async fn wait_port(&mut self, party: &str) {
        let off = match party {
            "up" | "arm" => 0,
            "aad" => 2,
            "msrp" => 4,
            "host-1" => 11,
            "host-2" => 12,
            _ => 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(self.addr(off)).await.is_ok() {
                return;
            }
            if let Some(c) = self.children.get_mut(party) {
                if let Ok(Some(st)) = c.try_wait() {
                    // The data dir is a temporary one that the unwinding removes: show the log's end.
                    let log = self.dir.join("logs").join(format!("{party}.log"));
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "{party} exited with {st} while starting; the end of {}:\n{}",
                        log.display(),
                        tail.join("\n")
                    );
                }
            }
            assert!(Instant::now() < deadline, "{party} did not listen in 60 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Ready: every party listens and ARM answers GetAccount.
    async fn wait_ready(&mut self, arm: &mut ArmClient<Channel>) {
        for p in self.parties() {
            self.wait_port(p).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while arm
            .get_account(pb::GetAccountRequest::default())
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "ARM did not answer in 60 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// ---------------------------------------------------------------------------------------------
// The workers' model of what ARM has confirmed
// ---------------------------------------------------------------------------------------------

/// Identities of a VM or scale set as confirmed by the last successful call; `None`: unknown (the
/// last call on it failed, so it may or may not have been applied), adopted from ARM at the next check.
type Ids = Option<(bool, BTreeSet<String>)>;

#[derive(Default)]
struct Model {
    /// VM name → identities.
    vms: BTreeMap<String, Ids>,
    /// Scale set name → identities.
    vmss: BTreeMap<String, Ids>,
    /// UAMI name → Some(resource id) when confirmed, None when unknown.
    uamis: BTreeMap<String, Option<String>>,
    /// Role assignment id → confirmed (true) or unknown (false).
    roles: BTreeMap<String, bool>,
    /// Names whose existence is unknown (a create or delete failed): kind, name.
    maybe: BTreeSet<(char, String)>,
}

impl Model {
    /// The VM (`'v'`) or scale-set (`'s'`) table.
    fn table(&mut self, kind: char) -> &mut BTreeMap<String, Ids> {
        if kind == 's' {
            &mut self.vmss
        } else {
            &mut self.vms
        }
    }

    /// A create of VM or scale set `name` answered: it exists without identities, or, failed, its
    /// existence is unknown.
    fn created(&mut self, kind: char, name: &str, ok: bool) {
        if ok {
            self.table(kind)
                .insert(name.to_string(), Some((false, BTreeSet::new())));
        } else {
            self.maybe.insert((kind, name.to_string()));
        }
    }

    /// A delete of UAMI (`'u'`), VM or scale set `name` answered: it is gone, or, failed, its
    /// existence is unknown.
    fn deleted(&mut self, kind: char, name: &str, ok: bool) {
        if kind == 'u' {
            self.uamis.remove(name);
        } else {
            self.table(kind).remove(name);
        }
        if !ok {
            self.maybe.insert((kind, name.to_string()));
        }
    }
}

/// Notes a failed call's error for the operation log; true when the call succeeded.
fn settle<T>(w: usize, r: &Result<T, misim_proto::tonic::Status>) -> bool {
    note_error(w, r);
    r.is_ok()
}

struct Shared {
    arm_url: String,
    sub: String,
    ops: AtomicUsize,
    ops_ok: AtomicUsize,
    target_ops: usize,
    paused: AtomicBool,
    busy: AtomicUsize,
    models: Vec<Mutex<Model>>,
    log: Mutex<std::fs::File>,
}

fn arm_client(url: &str) -> ArmClient<Channel> {
    let ep = Endpoint::from_shared(url.to_string())
        .expect("ARM url")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(20));
    ArmClient::new(ep.connect_lazy())
}

fn ids_of(i: &Option<pb::VmIdentity>) -> (bool, BTreeSet<String>) {
    match i {
        None => (false, BTreeSet::new()),
        // The recorded (desired) identities: `type` names a system-assigned identity as soon as ARM has
        // recorded it, before MSRP answered with its principal (that is convergence, checked apart).
        Some(i) => (
            i.r#type.contains("SystemAssigned"),
            i.user_assigned_identities
                .keys()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
        ),
    }
}

async fn worker(w: usize, sh: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed ^ (w as u64).wrapping_mul(0x1234_5678_9abc));
    let mut arm = arm_client(&sh.arm_url);
    let rg = format!("soak-w{w}");
    let sub = sh.sub.clone();
    let mut counter = 0usize;
    // The group exists before the first counted operation.
    loop {
        let r = arm
            .create_resource_group(pb::CreateResourceGroupRequest {
                name: rg.clone(),
                location: "westeurope".into(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        while sh.paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sh.busy.fetch_add(1, Ordering::SeqCst);
        if sh.paused.load(Ordering::SeqCst) {
            sh.busy.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let n = sh.ops.fetch_add(1, Ordering::SeqCst);
        if n >= sh.target_ops {
            sh.ops.fetch_sub(1, Ordering::SeqCst);
            sh.busy.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        counter += 1;
        let (what, ok) = one_op(w, &mut rng, &mut arm, &sh, &rg, &sub, counter).await;
        if ok {
            sh.ops_ok.fetch_add(1, Ordering::SeqCst);
        }
        {
            use std::io::Write;
            let mut f = sh.log.lock().unwrap();
            let _ = writeln!(
                f,
                "op {n} w{w} {what} -> {}",
                if ok {
                    "ok".to_string()
                } else {
                    format!("FAILED {}", last_error(w))
                }
            );
        }
        sh.busy.fetch_sub(1, Ordering::SeqCst);
        if !ok {
            // A party is down: back off instead of burning the operation budget on refusals.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

static LAST_ERRORS: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());

fn last_error(w: usize) -> String {
    LAST_ERRORS.lock().unwrap().remove(&w).unwrap_or_default()
}

fn note_error<T>(w: usize, r: &Result<T, misim_proto::tonic::Status>) {
    if let Err(e) = r {
        LAST_ERRORS
            .lock()
            .unwrap()
            .insert(w, format!("{:?}: {}", e.code(), e.message()));
    }
}

/// One random operation; updates the worker's model. Returns a description and success.
async fn one_op(
    w: usize,
    rng: &mut Rng,
    arm: &mut ArmClient<Channel>,
    sh: &Shared,
    rg: &str,
    sub: &str,
    counter: usize,
) -> (String, bool) {
    let (vms, sets, uamis, roles, principals) = {
        let m = sh.models[w].lock().unwrap();
        let mut principals = Vec::new();
        for (_, id) in m.uamis.iter() {
            let _ = id;
        }
        let uamis: Vec<(String, Option<String>)> = m
            .uamis
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (_, v) in uamis.iter() {
            if let Some(id) = v {
                principals.push(id.clone());
            }
        }
        (
            m.vms.keys().cloned().collect::<Vec<_>>(),
            m.vmss.keys().cloned().collect::<Vec<_>>(),
            uamis,
            m.roles.keys().cloned().collect::<Vec<_>>(),
            principals,
        )
    };
    let uami_ids: Vec<String> = uamis.iter().filter_map(|(_, v)| v.clone()).collect();
    let roll = rng.below(100);
    let model = |f: &mut dyn FnMut(&mut Model)| {
        let mut m = sh.models[w].lock().unwrap();
        f(&mut m);
    };
    macro_rules! req {
        ($t:ident { $($f:ident : $v:expr),* $(,)? }) => {
            {
                // Some requests have no fields beyond these.
                #[allow(clippy::needless_update)]
                let r = pb::$t { subscription_id: sub.to_string(), resource_group: rg.to_string(), $($f: $v,)* ..Default::default() };
                r
            }
        };
    }
    match roll {
        // UAMIs
        0..=9 if uamis.len() < 3 => {
            let name = format!("uami-{w}-{counter}");
            let r = arm
                .create_user_assigned_identity(req!(CreateUserAssignedIdentityRequest {
                    name: name.clone()
                }))
                .await;
            note_error(w, &r);
            let ok = r.is_ok();
            model(&mut |m| match &r {
                Ok(u) => {
                    m.uamis
                        .insert(name.clone(), Some(u.get_ref().id.to_ascii_lowercase()));
                }
                Err(_) => {
                    m.maybe.insert(('u', name.clone()));
                }
            });
            (format!("create uami {name}"), ok)
        }
        0..=14 if !uamis.is_empty() => {
            // Only an identity no VM or scale set of this worker uses (per the model).
            let in_use: BTreeSet<String> = {
                let m = sh.models[w].lock().unwrap();
                m.vms
                    .values()
                    .chain(m.vmss.values())
                    .flat_map(|v| match v {
                        Some((_, u)) => u.iter().cloned().collect::<Vec<_>>(),
                        None => uami_ids.clone(),
                    })
                    .collect()
            };
            let free: Vec<&(String, Option<String>)> = uamis
                .iter()
                .filter(|(_, id)| id.as_ref().is_some_and(|i| !in_use.contains(i)))
                .collect();
            let Some((name, _)) = rng.pick(&free).map(|x| (*x).clone()) else {
                return ("noop (no free uami)".into(), true);
            };
            let r = arm
                .delete_user_assigned_identity(req!(DeleteUserAssignedIdentityRequest {
                    name: name.clone()
                }))
                .await;
            let ok = settle(w, &r);
            model(&mut |m| m.deleted('u', &name, ok));
            (format!("delete uami {name}"), ok)
        }
        // VMs
        15..=27 if vms.len() < 4 => {
            let name = format!("vm-{w}-{counter}");
            let r = arm
                .create_vm(req!(CreateVmRequest { name: name.clone() }))
                .await;
            let ok = settle(w, &r);
            model(&mut |m| m.created('v', &name, ok));
            (format!("create vm {name}"), ok)
        }
        15..=31 if !vms.is_empty() => {
            let name = rng.pick(&vms).cloned().unwrap_or_default();
            let r = arm
                .delete_vm(req!(DeleteVmRequest { name: name.clone() }))
                .await;
            let ok = settle(w, &r);
            model(&mut |m| m.deleted('v', &name, ok));
            (format!("delete vm {name}"), ok)
        }
        32..=59 if !vms.is_empty() || !sets.is_empty() => {
            let vmss = vms.is_empty() || (!sets.is_empty() && rng.below(3) == 0);
            let name = if vmss {
                rng.pick(&sets)
            } else {
                rng.pick(&vms)
            }
            .cloned()
            .unwrap_or_default();
            let system = uami_ids.is_empty() || rng.below(2) == 0;
            let users: Vec<String> = if system {
                vec![]
            } else {
                vec![rng.pick(&uami_ids).cloned().unwrap_or_default()]
            };
            let assign = rng.below(3) != 0;
            // The four calls take the same fields.
            macro_rules! identity_call {
                ($method:ident, $t:ident) => {
                    arm.$method(req!($t {
                        name: name.clone(),
                        system_assigned: system,
                        user_assigned_identities: users.clone()
                    }))
                    .await
                };
            }
            let r = match (vmss, assign) {
                (false, true) => identity_call!(assign_vm_identity, AssignVmIdentityRequest),
                (false, false) => identity_call!(remove_vm_identity, RemoveVmIdentityRequest),
                (true, true) => identity_call!(assign_vmss_identity, AssignVmssIdentityRequest),
                (true, false) => identity_call!(remove_vmss_identity, RemoveVmssIdentityRequest),
            };
            let ok = settle(w, &r);
            let definitive = matches!(&r, Err(s) if matches!(s.code(), misim_proto::tonic::Code::NotFound | misim_proto::tonic::Code::InvalidArgument));
            model(&mut |m| {
                let map = if vmss { &mut m.vmss } else { &mut m.vms };
                if let Some(slot) = map.get_mut(&name) {
                    *slot = match &r {
                        Ok(i) => Some(ids_of(&Some(i.get_ref().clone()))),
                        Err(_) if definitive => slot.clone(),
                        Err(_) => None,
                    };
                }
            });
            (
                format!(
                    "{} {} {name} {}",
                    if assign { "assign" } else { "remove" },
                    if vmss { "vmss" } else { "vm" },
                    if system {
                        "system".to_string()
                    } else {
                        users.join(",")
                    }
                ),
                ok,
            )
        }
        // Scale sets
        60..=67 if sets.len() < 2 => {
            let name = format!("ss-{w}-{counter}");
            let r = arm
                .create_vmss(req!(CreateVmssRequest {
                    name: name.clone(),
                    capacity: 1 + rng.below(2) as u32
                }))
                .await;
            let ok = settle(w, &r);
            model(&mut |m| m.created('s', &name, ok));
            (format!("create vmss {name}"), ok)
        }
        60..=71 if !sets.is_empty() => {
            let name = rng.pick(&sets).cloned().unwrap_or_default();
            let r = arm
                .delete_vmss(req!(DeleteVmssRequest { name: name.clone() }))
                .await;
            let ok = settle(w, &r);
            model(&mut |m| m.deleted('s', &name, ok));
            (format!("delete vmss {name}"), ok)
        }
        // Role assignments
        72..=87 if !principals.is_empty() || !roles.is_empty() => {
            if roles.is_empty() || (rng.below(2) == 0 && !principals.is_empty() && roles.len() < 6)
            {
                // Principal of one of this worker's identities (looked up on ARM: the model keeps ids).
                let id = rng.pick(&principals).cloned().unwrap_or_default();
                let name = id.rsplit('/').next().unwrap_or_default().to_string();
                let principal = match arm
                    .get_user_assigned_identity(req!(GetUserAssignedIdentityRequest {
                        name: name.clone()
                    }))
                    .await
                {
                    Ok(u) => u.into_inner().principal_id,
                    Err(_) => return (format!("get uami {name}"), false),
                };
                let r = arm
                    .create_role_assignment(pb::CreateRoleAssignmentRequest {
                        scope: format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                        role: "Reader".into(),
                        principal_id: principal.clone(),
                        ..Default::default()
                    })
                    .await;
                note_error(w, &r);
                let ok = r.is_ok();
                if let Ok(ra) = &r {
                    let id = ra.get_ref().id.clone();
                    model(&mut |m| {
                        m.roles.insert(id.clone(), true);
                    });
                }
                (format!("create role assignment Reader for {principal}"), ok)
            } else {
                let id = rng.pick(&roles).cloned().unwrap_or_default();
                let r = arm
                    .delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: id.clone() })
                    .await;
                note_error(w, &r);
                let ok = r.is_ok();
                model(&mut |m| {
                    if ok {
                        m.roles.remove(&id);
                    } else if let Some(c) = m.roles.get_mut(&id) {
                        *c = false;
                    }
                });
                (format!("delete role assignment {id}"), ok)
            }
        }
        _ => {
            // Scale a scale set or fall back to creating a VM.
            if let Some(name) = rng.pick(&sets).cloned() {
                let cap = 1 + rng.below(2) as u32;
                let r = arm
                    .scale_vmss(pb::ScaleVmssRequest {
                        subscription_id: sub.to_string(),
                        resource_group: rg.to_string(),
                        name: name.clone(),
                        capacity: cap,
                    })
                    .await;
                note_error(w, &r);
                (format!("scale vmss {name} to {cap}"), r.is_ok())
            } else {
                let name = format!("vm-{w}-{counter}");
                let r = arm
                    .create_vm(req!(CreateVmRequest { name: name.clone() }))
                    .await;
                note_error(w, &r);
                let ok = r.is_ok();
                model(&mut |m| {
                    if ok {
                        m.vms.insert(name.clone(), Some((false, BTreeSet::new())));
                    } else {
                        m.maybe.insert(('v', name.clone()));
                    }
                });
                (format!("create vm {name}"), ok)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

struct Checker {
    dir: PathBuf,
    sub: String,
    tenant: String,
    http: reqwest::Client,
    /// (token, audience, exp, what) of tokens handed out before; each must verify until expiry.
    old_tokens: Vec<(String, String, u64, String)>,
}

#[derive(Default)]
struct Observed {
    /// Problems that may resolve with convergence (orphans, missing tokens).
    transient: Vec<String>,
    /// Problems that convergence cannot fix (lost identities, broken old tokens).
    hard: Vec<String>,
}

impl Checker {
    async fn admin(&self, url: &str) -> Channel {
        let tls = misim_core::control::ControlTls::load(&self.dir.join("ca").join("admin"))
            .expect("admin certificate");
        tls.endpoint(url).expect("endpoint").connect_lazy()
    }

    /// One pass over every invariant. `adopt`: resolve unknown model entries from ARM.
    async fn pass(&mut self, c: &Cluster, sh: &Shared, adopt: bool) -> Observed {
        let mut o = Observed::default();
        let mut arm = arm_client(&c.arm_grpc());
        let sub = self.sub.clone();
        // ARM's view.
        let mut arm_identities: BTreeMap<String, String> = BTreeMap::new(); // resource id → principal
        let mut all_vms: Vec<pb::VirtualMachine> = Vec::new();
        for (w, model) in sh.models.iter().enumerate() {
            let rg = format!("soak-w{w}");
            // ARM's lists of the group; a failed call is transient and ends the pass.
            macro_rules! list {
                ($call:ident($req:expr).$field:ident, $what:literal) => {
                    match arm.$call($req).await {
                        Ok(v) => v.into_inner().$field,
                        Err(e) => {
                            o.transient
                                .push(format!("ARM {} {rg}: {}", $what, e.message()));
                            return o;
                        }
                    }
                };
            }
            macro_rules! in_group {
                ($t:ident) => {
                    pb::$t {
                        subscription_id: sub.clone(),
                        resource_group: rg.clone(),
                    }
                };
            }
            let vms = list!(list_vms(in_group!(ListVmsRequest)).vms, "ListVms");
            let sets = list!(list_vmss(in_group!(ListVmssRequest)).scale_sets, "ListVmss");
            let uamis = list!(
                list_user_assigned_identities(in_group!(ListUserAssignedIdentitiesRequest))
                    .identities,
                "ListUserAssignedIdentities"
            );
            let roles = list!(
                list_role_assignments(pb::ListRoleAssignmentsRequest {
                    scope: format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                    ..Default::default()
                })
                .role_assignments,
                "ListRoleAssignments"
            );
            for u in &uamis {
                if u.principal_id.is_empty() {
                    o.transient.push(format!(
                        "user-assigned identity {} has no principal yet",
                        u.id
                    ));
                }
                arm_identities.insert(u.id.to_ascii_lowercase(), u.principal_id.clone());
            }
            let plain: Vec<&pb::VirtualMachine> =
                vms.iter().filter(|v| v.vm_scale_set.is_empty()).collect();
            for v in &vms {
                if v.provisioning_state != "Succeeded" {
                    o.transient
                        .push(format!("VM {} is {}", v.id, v.provisioning_state));
                }
            }
            for v in &plain {
                if let Some(i) = &v.identity {
                    if i.r#type.contains("SystemAssigned") {
                        if i.principal_id.is_empty() {
                            o.transient.push(format!(
                                "VM {}: system-assigned identity has no principal yet",
                                v.id
                            ));
                        }
                        arm_identities.insert(v.id.to_ascii_lowercase(), i.principal_id.clone());
                    }
                }
            }
            for s in &sets {
                if s.provisioning_state != "Succeeded" {
                    o.transient
                        .push(format!("scale set {} is {}", s.id, s.provisioning_state));
                }
                if let Some(i) = &s.identity {
                    if i.r#type.contains("SystemAssigned") {
                        if i.principal_id.is_empty() {
                            o.transient.push(format!(
                                "scale set {}: system-assigned identity has no principal yet",
                                s.id
                            ));
                        }
                        arm_identities.insert(s.id.to_ascii_lowercase(), i.principal_id.clone());
                    }
                }
            }
            let mut instances = Vec::new();
            for s in &sets {
                if let Ok(r) = arm
                    .list_vmss_instances(pb::ListVmssInstancesRequest {
                        subscription_id: sub.clone(),
                        resource_group: rg.clone(),
                        name: s.name.clone(),
                    })
                    .await
                {
                    instances.extend(r.into_inner().instances);
                }
            }
            // The model: nothing confirmed is lost, nothing removed comes back.
            let mut m = model.lock().unwrap();
            let vm_now: HashMap<&str, &pb::VirtualMachine> =
                plain.iter().map(|v| (v.name.as_str(), *v)).collect();
            let ss_now: HashMap<&str, &pb::VirtualMachineScaleSet> =
                sets.iter().map(|s| (s.name.as_str(), s)).collect();
            let ua_now: HashMap<&str, &pb::UserAssignedIdentity> =
                uamis.iter().map(|u| (u.name.as_str(), u)).collect();
            let ra_now: BTreeSet<&str> = roles.iter().map(|r| r.id.as_str()).collect();
            let mut hard = Vec::new();
            let vm_ids = vm_now
                .iter()
                .map(|(n, v)| (*n, ids_of(&v.identity)))
                .collect();
            let ss_ids = ss_now
                .iter()
                .map(|(n, s)| (*n, ids_of(&s.identity)))
                .collect();
            compare_ids("VM", &rg, &mut m.vms, &vm_ids, adopt, &mut hard);
            compare_ids("scale set", &rg, &mut m.vmss, &ss_ids, adopt, &mut hard);
            for (name, exp) in m.uamis.iter_mut() {
                match (ua_now.get(name.as_str()), exp.as_ref()) {
                    (None, _) => hard.push(format!(
                        "user-assigned identity {rg}/{name} lost (its create returned)"
                    )),
                    (Some(_), Some(_)) => {}
                    (Some(u), None) => {
                        if adopt {
                            *exp = Some(u.id.to_ascii_lowercase());
                        }
                    }
                }
            }
            let mut drop_roles = Vec::new();
            for (id, confirmed) in m.roles.iter_mut() {
                if !ra_now.contains(id.as_str()) {
                    if *confirmed {
                        hard.push(format!("role assignment {id} lost (its create returned)"));
                    } else if adopt {
                        drop_roles.push(id.clone());
                    }
                } else if adopt {
                    *confirmed = true;
                }
            }
            for id in drop_roles {
                m.roles.remove(&id);
            }
            // Resources a worker never confirmed must not exist, unless their call was ambiguous.
            for v in &plain {
                if !m.vms.contains_key(&v.name) {
                    if adopt && m.maybe.remove(&('v', v.name.clone())) {
                        m.vms.insert(v.name.clone(), Some(ids_of(&v.identity)));
                    } else if !m.maybe.contains(&('v', v.name.clone())) {
                        hard.push(format!(
                            "VM {rg}/{} exists though its delete returned",
                            v.name
                        ));
                    }
                }
            }
            for s in &sets {
                if !m.vmss.contains_key(&s.name) {
                    if adopt && m.maybe.remove(&('s', s.name.clone())) {
                        m.vmss.insert(s.name.clone(), Some(ids_of(&s.identity)));
                    } else if !m.maybe.contains(&('s', s.name.clone())) {
                        hard.push(format!(
                            "scale set {rg}/{} exists though its delete returned",
                            s.name
                        ));
                    }
                }
            }
            for u in &uamis {
                if !m.uamis.contains_key(&u.name) {
                    if adopt && m.maybe.remove(&('u', u.name.clone())) {
                        m.uamis
                            .insert(u.name.clone(), Some(u.id.to_ascii_lowercase()));
                    } else if !m.maybe.contains(&('u', u.name.clone())) {
                        hard.push(format!(
                            "user-assigned identity {rg}/{} exists though its delete returned",
                            u.name
                        ));
                    }
                }
            }
            if adopt {
                // Whatever is still unknown does not exist.
                m.maybe.clear();
            }
            o.hard.extend(hard);
            all_vms.extend(plain.into_iter().cloned());
            all_vms.extend(instances);
        }

        // No duplicate IPs or IMDS ports.
        let mut ips: HashMap<String, String> = HashMap::new();
        let mut ports: HashMap<String, String> = HashMap::new();
        for v in &all_vms {
            if !v.private_ip_address.is_empty() {
                if let Some(other) = ips.insert(v.private_ip_address.clone(), v.id.clone()) {
                    o.hard.push(format!(
                        "duplicate private IP {}: {} and {}",
                        v.private_ip_address, other, v.id
                    ));
                }
            }
            if !v.imds_endpoint.is_empty() {
                if let Some(other) = ports.insert(v.imds_endpoint.clone(), v.id.clone()) {
                    o.hard.push(format!(
                        "duplicate IMDS endpoint {}: {} and {}",
                        v.imds_endpoint, other, v.id
                    ));
                }
            }
        }

        // No orphaned principal or credential: MSRP and Azure AD hold exactly ARM's identities.
        let mut msrp = MsrpClient::new(self.admin(&c.msrp_grpc()).await);
        let msrp_ids = match msrp
            .list_identities(misim_proto::msrp::ListIdentitiesRequest {})
            .await
        {
            Ok(r) => r.into_inner().identities,
            Err(e) => {
                o.transient
                    .push(format!("MSRP ListIdentities: {}", e.message()));
                return o;
            }
        };
        let mut msrp_map: BTreeMap<String, (String, String)> = BTreeMap::new();
        for i in &msrp_ids {
            let rid = i.resource_id.to_ascii_lowercase();
            if !rid.contains("/resourcegroups/soak-w") {
                continue;
            }
            msrp_map.insert(
                rid,
                (
                    i.principal_id.clone(),
                    i.thumbprint_sha1_hex.to_ascii_uppercase(),
                ),
            );
        }
        for (rid, principal) in &arm_identities {
            match msrp_map.get(rid) {
                None => o.transient.push(format!(
                    "identity {rid} (principal {principal}) has no MSRP record"
                )),
                Some((p, _)) if p != principal => o.transient.push(format!(
                    "identity {rid}: ARM principal {principal}, MSRP principal {p}"
                )),
                _ => {}
            }
        }
        for (rid, (p, _)) in &msrp_map {
            if !arm_identities.contains_key(rid) {
                o.transient
                    .push(format!("orphaned MSRP identity {rid} (principal {p})"));
            }
        }
        let mut aad = AadAdminClient::new(self.admin(&c.aad_grpc()).await);
        let sps = match aad
            .list_service_principals(misim_proto::aad::ListServicePrincipalsRequest {
                tenant_id: self.tenant.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner().service_principals,
            Err(e) => {
                o.transient
                    .push(format!("Azure AD ListServicePrincipals: {}", e.message()));
                return o;
            }
        };
        let mut sp_principals = BTreeSet::new();
        for sp in &sps {
            let rid = sp.msi_resource_id.to_ascii_lowercase();
            if !rid.contains("/resourcegroups/soak-w") {
                continue;
            }
            sp_principals.insert(sp.object_id.clone());
            match arm_identities.get(&rid) {
                Some(p) if *p == sp.object_id => {}
                _ => o.transient.push(format!(
                    "orphaned service principal {} for {rid}",
                    sp.object_id
                )),
            }
            let thumbs: BTreeSet<String> = sp
                .key_credentials
                .iter()
                .map(|k| k.thumbprint_sha1_hex.to_ascii_uppercase())
                .collect();
            let want: BTreeSet<String> = msrp_map
                .get(&rid)
                .map(|(_, t)| t.clone())
                .into_iter()
                .collect();
            if !want.is_empty() && thumbs != want {
                o.transient.push(format!(
                    "service principal {} of {rid}: key credentials {:?}, MSRP holds {:?} (orphaned credential)",
                    sp.object_id, thumbs, want
                ));
            }
        }
        for (rid, p) in &arm_identities {
            if !sp_principals.contains(p) {
                o.transient.push(format!(
                    "identity {rid}: no service principal {p} in Azure AD"
                ));
            }
        }

        // Every assigned identity gets a token from its VM's IMDS.
        let uami_client: HashMap<String, (String, String)> = {
            let mut m = HashMap::new();
            for (w, _) in sh.models.iter().enumerate() {
                if let Ok(r) = arm
                    .list_user_assigned_identities(pb::ListUserAssignedIdentitiesRequest {
                        subscription_id: sub.clone(),
                        resource_group: format!("soak-w{w}"),
                    })
                    .await
                {
                    for u in r.into_inner().identities {
                        m.insert(u.id.to_ascii_lowercase(), (u.client_id, u.principal_id));
                    }
                }
            }
            m
        };
        let resource = "https://management.azure.com/";
        for v in &all_vms {
            let Some(i) = &v.identity else { continue };
            if v.imds_endpoint.is_empty() {
                continue;
            }
            let mut asks: Vec<(Vec<(&str, String)>, String)> = Vec::new();
            if !i.principal_id.is_empty() {
                asks.push((vec![], i.principal_id.clone()));
            }
            for (rid, val) in &i.user_assigned_identities {
                let client = if val.client_id.is_empty() {
                    uami_client
                        .get(&rid.to_ascii_lowercase())
                        .map(|x| x.0.clone())
                        .unwrap_or_default()
                } else {
                    val.client_id.clone()
                };
                let principal = if val.principal_id.is_empty() {
                    uami_client
                        .get(&rid.to_ascii_lowercase())
                        .map(|x| x.1.clone())
                        .unwrap_or_default()
                } else {
                    val.principal_id.clone()
                };
                asks.push((vec![("client_id", client)], principal));
            }
            for (extra, principal) in asks {
                let mut q: Vec<(&str, String)> = vec![
                    ("api-version", "2018-02-01".into()),
                    ("resource", resource.into()),
                ];
                q.extend(extra);
                let r = self
                    .http
                    .get(format!(
                        "{}/metadata/identity/oauth2/token",
                        v.imds_endpoint
                    ))
                    .query(&q)
                    .header("Metadata", "true")
                    .send()
                    .await;
                let (status, body) = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s, r.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(e) => (0, Value::String(e.to_string())),
                };
                let Some(tok) = body["access_token"].as_str().filter(|_| status == 200) else {
                    o.transient.push(format!(
                        "no token from {}'s IMDS {} for principal {principal}: {status} {body}",
                        v.id, v.imds_endpoint
                    ));
                    continue;
                };
                let claims = misim_tests::unverified_claims(tok);
                if claims["oid"].as_str() != Some(principal.as_str()) {
                    o.transient.push(format!(
                        "token from {}'s IMDS has oid {} but the identity's principal is {principal}",
                        v.id, claims["oid"]
                    ));
                }
                let exp = claims["exp"].as_u64().unwrap_or(0);
                if self.old_tokens.len() < 400 && !self.old_tokens.iter().any(|t| t.0 == tok) {
                    self.old_tokens.push((
                        tok.to_string(),
                        resource.to_string(),
                        exp,
                        format!("{} {principal}", v.id),
                    ));
                }
            }
        }

        // Every old token still verifies until it expires.
        match self.jwks(c).await {
            Ok((issuer_of, keys)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                for (tok, aud, exp, what) in &self.old_tokens {
                    if *exp <= now + 5 {
                        continue;
                    }
                    if let Err(e) = verify(tok, aud, &issuer_of, &keys) {
                        o.hard.push(format!(
                            "old token of {what} (exp {exp}) no longer verifies: {e}"
                        ));
                    }
                }
            }
            Err(e) => o.transient.push(format!("Azure AD discovery/JWKS: {e}")),
        }
        o
    }

    async fn jwks(
        &self,
        c: &Cluster,
    ) -> Result<(String, HashMap<String, (String, String)>), String> {
        let d: Value = self
            .http
            .get(format!(
                "{}/{}/.well-known/openid-configuration",
                c.aad_http(),
                self.tenant
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let issuer = d["issuer"].as_str().unwrap_or_default().to_string();
        let j: Value = self
            .http
            .get(d["jwks_uri"].as_str().unwrap_or_default())
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let keys = j["keys"]
            .as_array()
            .ok_or("no keys")?
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap_or_default().to_string(),
                    (
                        k["n"].as_str().unwrap_or_default().to_string(),
                        k["e"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect();
        Ok((issuer, keys))
    }
}

fn verify(
    tok: &str,
    aud: &str,
    issuer: &str,
    keys: &HashMap<String, (String, String)>,
) -> Result<(), String> {
    let kid = decode_header(tok)
        .map_err(|e| e.to_string())?
        .kid
        .unwrap_or_default();
    let (n, e) = keys
        .get(&kid)
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[aud]);
    decode::<Value>(tok, &key, &v)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Compares the model's VMs or scale sets (`what`) with ARM's (`now`: name → identities): each whose
/// create returned exists, with the identities the last successful call left; one in doubt is
/// adopted as ARM has it when `adopt`. Differences go to `hard`.
fn compare_ids(
    what: &str,
    rg: &str,
    model: &mut BTreeMap<String, Ids>,
    now: &HashMap<&str, (bool, BTreeSet<String>)>,
    adopt: bool,
    hard: &mut Vec<String>,
) {
    for (name, exp) in model.iter_mut() {
        match (now.get(name.as_str()), exp.as_ref()) {
            (None, _) => hard.push(format!("{what} {rg}/{name} lost (its create returned)")),
            (Some(got), Some(e)) => {
                if got != e {
                    hard.push(format!(
                        "{what} {rg}/{name}: identities {} but the last successful call left {}",
                        show_ids(got),
                        show_ids(e)
                    ));
                }
            }
            (Some(got), None) => {
                if adopt {
                    *exp = Some(got.clone());
                }
            }
        }
    }
}

fn show_ids((s, u): &(bool, BTreeSet<String>)) -> String {
    let mut parts: Vec<String> = Vec::new();
    if *s {
        parts.push("system".into());
    }
    parts.extend(
        u.iter()
            .map(|x| x.rsplit('/').next().unwrap_or(x).to_string()),
    );
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("+")
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Summary {
    ops: usize,
    ops_ok: usize,
    kills: BTreeMap<String, usize>,
    checks: usize,
    violations: Vec<String>,
    worst: (Duration, String),
    tokens_checked: usize,
}

fn free_base(rng: &mut Rng) -> u16 {
    loop {
        let base = 20000 + (rng.below(380) as u16) * 100;
        let ok = [0u16, 1, 2, 3, 4, 5, 6, 11, 12, 100, 600]
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if ok {
            return base;
        }
    }
}

async fn run_phase(
    args: &Args,
    mode: Mode,
    ops: usize,
    kills: usize,
    root: &Path,
    sum: &mut Summary,
) {
    let mut rng = Rng(args.seed ^ if mode == Mode::Up { 0xA } else { 0xB });
    let bin = std::env::var_os("MISIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/misim"));
    let dir = root.join(match mode {
        Mode::Up => "up",
        Mode::Parties => "parties",
    });
    let mut cluster = Cluster {
        mode,
        bin,
        dir: dir.clone(),
        base: free_base(&mut rng),
        children: BTreeMap::new(),
    };
    cluster.start_all().await;
    let mut arm = arm_client(&cluster.arm_grpc());
    cluster.wait_ready(&mut arm).await;
    let account = arm
        .get_account(pb::GetAccountRequest::default())
        .await
        .expect("account")
        .into_inner();
    let sh = Arc::new(Shared {
        arm_url: cluster.arm_grpc(),
        sub: account.subscription_id.clone(),
        ops: AtomicUsize::new(0),
        ops_ok: AtomicUsize::new(0),
        target_ops: ops,
        paused: AtomicBool::new(false),
        busy: AtomicUsize::new(0),
        models: (0..args.workers)
            .map(|_| Mutex::new(Model::default()))
            .collect(),
        log: Mutex::new(std::fs::File::create(dir.join("ops.log")).expect("ops.log")),
    });
    let mut checker = Checker {
        dir: dir.clone(),
        sub: account.subscription_id.clone(),
        tenant: account.tenant_id.clone(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http"),
        old_tokens: Vec::new(),
    };
    println!(
        "soak: phase {mode:?}: data {}, base port {}, {ops} operations, {kills} kills, {} workers",
        dir.display(),
        cluster.base,
        args.workers
    );
    let handles: Vec<_> = (0..args.workers)
        .map(|w| tokio::spawn(worker(w, sh.clone(), args.seed)))
        .collect();
    let per = ops / kills.max(1);
    for k in 0..kills {
        // A random moment in this kill's share of the operations.
        let at = k * per + per / 3 + rng.below((per * 2 / 3).max(1));
        while sh.ops.load(Ordering::SeqCst) < at.min(ops.saturating_sub(1)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(40) as u64)).await;
        let victim = match mode {
            Mode::Up => "up".to_string(),
            Mode::Parties => PARTIES[rng.below(PARTIES.len())].to_string(),
        };
        cluster.kill(&victim);
        *sum.kills.entry(victim.clone()).or_default() += 1;
        // Workers keep calling for a moment while it is down (errors), then pause for the restart.
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300) as u64)).await;
        sh.paused.store(true, Ordering::SeqCst);
        while sh.busy.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.spawn(&victim);
        cluster.wait_ready(&mut arm).await;
        let what = format!(
            "kill {} of {victim} at op {}",
            k + 1,
            sh.ops.load(Ordering::SeqCst)
        );
        check(&mut checker, &cluster, &sh, &what, sum).await;
        sh.paused.store(false, Ordering::SeqCst);
    }
    for h in handles {
        let _ = h.await;
    }
    check(&mut checker, &cluster, &sh, "end of phase", sum).await;
    sum.ops += sh.ops.load(Ordering::SeqCst);
    sum.ops_ok += sh.ops_ok.load(Ordering::SeqCst);
    sum.tokens_checked += checker.old_tokens.len();
    cluster.kill_all();
}

/// Polls the invariants until they hold or the convergence deadline passes; records violations.
async fn check(checker: &mut Checker, c: &Cluster, sh: &Shared, what: &str, sum: &mut Summary) {
    sum.checks += 1;
    let start = Instant::now();
    let mut first: Option<String> = None;
    loop {
        // Unknown outcomes are adopted once the system had the whole window to converge, or as soon
        // as everything else holds.
        let last = start.elapsed() >= CONVERGENCE;
        let o = checker.pass(c, sh, false).await;
        if first.is_none() && !o.transient.is_empty() {
            first = Some(format!(
                "{} pending, e.g. {}",
                o.transient.len(),
                o.transient[0]
            ));
        }
        if o.transient.is_empty() || last {
            let _ = o;
            // The pass that adopts unknown outcomes must itself see a converged system.
            let o = checker.pass(c, sh, true).await;
            if !o.transient.is_empty() && !last {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let took = start.elapsed();
            if took > sum.worst.0 {
                sum.worst = (took, what.to_string());
            }
            let mut v: Vec<String> = o.hard.iter().map(|h| format!("[{what}] {h}")).collect();
            if !o.transient.is_empty() {
                v.extend(o.transient.iter().map(|t| {
                    format!(
                        "[{what}] not converged after {:.1} s: {t}",
                        took.as_secs_f64()
                    )
                }));
            }
            if took > CONVERGENCE && o.transient.is_empty() {
                v.push(format!(
                    "[{what}] converged only after {:.1} s",
                    took.as_secs_f64()
                ));
            }
            println!(
                "   check [{what}]: {} in {:.2} s{}",
                if v.is_empty() {
                    "invariants hold"
                } else {
                    "VIOLATED"
                },
                took.as_secs_f64(),
                first
                    .as_ref()
                    .map(|f| format!(" (first pass: {f})"))
                    .unwrap_or_default()
            );
            for x in &v {
                println!("VIOLATION {x}");
            }
            sum.violations.extend(v);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let root = tempfile::Builder::new()
        .prefix("misim-soak-")
        .tempdir()
        .expect("temp dir");
    println!(
        "soak: seed {} (rerun with --seed {}), {} workers, modes {:?}",
        args.seed, args.seed, args.workers, args.modes
    );
    let started = Instant::now();
    let mut sum = Summary::default();
    let n = args.modes.len();
    for (i, mode) in args.modes.iter().enumerate() {
        let ops = args.ops / n + if i == 0 { args.ops % n } else { 0 };
        let kills = args.kills / n + if i == 0 { args.kills % n } else { 0 };
        run_phase(&args, *mode, ops, kills, root.path(), &mut sum).await;
    }
    let kills: usize = sum.kills.values().sum();
    println!("== soak summary");
    println!("   seed:               {}", args.seed);
    println!(
        "   operations:         {} ({} succeeded, {} failed while a party was down)",
        sum.ops,
        sum.ops_ok,
        sum.ops - sum.ops_ok
    );
    println!(
        "   kills (kill -9):    {kills} ({})",
        sum.kills
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("   invariant checks:   {}", sum.checks);
    println!("   tokens re-verified: {}", sum.tokens_checked);
    println!(
        "   worst convergence:  {:.2} s ({})",
        sum.worst.0.as_secs_f64(),
        sum.worst.1
    );
    println!("   violations:         {}", sum.violations.len());
    for v in &sum.violations {
        println!("     {v}");
    }
    println!(
        "   time:               {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let failed = !sum.violations.is_empty() || sum.ops < args.ops || kills < args.kills;
    if failed || args.keep {
        let kept = root.keep();
        println!(
            "   data and logs kept in {} (ops.log, logs/*.log)",
            kept.display()
        );
    }
    if failed {
        std::process::exit(1);
    }
}
