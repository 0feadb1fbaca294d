//! `misim.sim.v1`: the Clock, Faults and Propagation gRPC services over one system's [`Clock`] (its
//! time, its fault registry, its propagation delays). ARM serves them on its gRPC port under
//! `misim up`; callers are the CLI (`misim clock|fault …`), tests and scenarios.

use misim_proto::sim as pb;
use tonic::{Request, Response, Status};

use crate::clock::ClockError;
use crate::faults::{FaultAction, FaultBounds, FaultError, FaultKind, FaultMatch, FaultRule};
use crate::Clock;

type R<T> = Result<Response<T>, Status>;

/// A fault rule's matcher as `$ty` ([`FaultMatch`] or `pb::FaultMatch`, which have the same fields):
/// one field list for both directions.
macro_rules! fault_match {
    ($m:expr => $($ty:ident)::+) => {{
        let m = $m;
        $($ty)::+ {
            party: m.party,
            endpoint: m.endpoint,
            path: m.path,
            method: m.method,
            identity: m.identity,
            resource: m.resource,
            caller: m.caller,
        }
    }};
}

/// The three services over one clock.
#[derive(Clone, Debug)]
pub struct SimServices {
    clock: Clock,
}

impl SimServices {
    /// Services acting on `clock` (and its faults and propagation delays).
    pub fn new(clock: Clock) -> Self {
        SimServices { clock }
    }

    fn state(&self) -> pb::ClockState {
        let now = self.clock.now();
        pb::ClockState {
            epoch_seconds: now,
            rfc3339: Clock::rfc3339(now),
            manual: self.clock.is_manual(),
        }
    }
}

fn clock_status(e: ClockError) -> Status {
    match e {
        ClockError::NotManual => Status::failed_precondition(e.to_string()),
        ClockError::Backwards { .. } => Status::invalid_argument(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::clock_server::Clock for SimServices {
    async fn get_time(&self, _: Request<pb::GetTimeRequest>) -> R<pb::ClockState> {
        Ok(Response::new(self.state()))
    }

    async fn advance(&self, r: Request<pb::AdvanceRequest>) -> R<pb::ClockState> {
        let secs = r.into_inner().seconds;
        if secs <= 0 {
            return Err(Status::invalid_argument(
                "advance by a positive number of seconds",
            ));
        }
        if !self.clock.is_manual() {
            return Err(clock_status(ClockError::NotManual));
        }
        self.clock.advance(secs);
        tracing::info!(seconds = secs, now = self.clock.now(), "clock advanced");
        Ok(Response::new(self.state()))
    }

    async fn set_time(&self, r: Request<pb::SetTimeRequest>) -> R<pb::ClockState> {
        self.clock
            .set(r.into_inner().epoch_seconds)
            .map_err(clock_status)?;
        tracing::info!(now = self.clock.now(), "clock set");
        Ok(Response::new(self.state()))
    }
}

fn kind_from_pb(k: i32) -> Result<FaultKind, Status> {
    Ok(match pb::FaultKind::try_from(k) {
        Ok(pb::FaultKind::HttpStatus) => FaultKind::HttpStatus,
        Ok(pb::FaultKind::GrpcStatus) => FaultKind::GrpcStatus,
        Ok(pb::FaultKind::Latency) => FaultKind::Latency,
        Ok(pb::FaultKind::Close) => FaultKind::Close,
        Ok(pb::FaultKind::Reset) => FaultKind::Reset,
        Ok(pb::FaultKind::Malformed) => FaultKind::Malformed,
        _ => return Err(Status::invalid_argument(
            "action.kind is required: http-status, grpc-status, latency, close, reset or malformed",
        )),
    })
}

fn kind_to_pb(k: FaultKind) -> pb::FaultKind {
    match k {
        FaultKind::HttpStatus => pb::FaultKind::HttpStatus,
        FaultKind::GrpcStatus => pb::FaultKind::GrpcStatus,
        FaultKind::Latency => pb::FaultKind::Latency,
        FaultKind::Close => pb::FaultKind::Close,
        FaultKind::Reset => pb::FaultKind::Reset,
        FaultKind::Malformed => pb::FaultKind::Malformed,
    }
}

fn rule_to_pb(r: FaultRule) -> pb::FaultRule {
    let m = r.matcher;
    let a = r.action;
    pb::FaultRule {
        id: r.id,
        r#match: Some(fault_match!(m => pb::FaultMatch)),
        action: Some(pb::FaultAction {
            kind: kind_to_pb(a.kind) as i32,
            http_status: u32::from(a.http_status),
            retry_after_secs: a.retry_after_secs,
            body: a.body,
            grpc_code: a.grpc_code,
            message: a.message,
            latency_ms: a.latency_ms,
        }),
        bounds: Some(pb::FaultBounds {
            count: r.bounds.count,
            duration_secs: r.bounds.duration_secs,
            probability: r.bounds.probability,
            seed: r.bounds.seed,
        }),
        hits: r.hits,
        considered: r.considered,
        created_epoch_seconds: r.created,
        active: r.active,
    }
}

fn fault_status(e: FaultError) -> Status {
    match e {
        FaultError::Invalid(m) => Status::invalid_argument(m),
        FaultError::NotFound(_) => Status::not_found(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::faults_server::Faults for SimServices {
    async fn add_fault(&self, r: Request<pb::AddFaultRequest>) -> R<pb::FaultRule> {
        let r = r.into_inner();
        let m = r.r#match.unwrap_or_default();
        let a = r
            .action
            .ok_or_else(|| Status::invalid_argument("action is required"))?;
        let b = r.bounds.unwrap_or_default();
        let http_status = u16::try_from(a.http_status)
            .map_err(|_| Status::invalid_argument("http_status out of range"))?;
        let rule = self
            .clock
            .faults()
            .add(
                fault_match!(m => FaultMatch),
                FaultAction {
                    kind: kind_from_pb(a.kind)?,
                    http_status,
                    retry_after_secs: a.retry_after_secs,
                    body: a.body,
                    grpc_code: a.grpc_code,
                    message: a.message,
                    latency_ms: a.latency_ms,
                },
                FaultBounds {
                    count: b.count,
                    duration_secs: b.duration_secs,
                    probability: b.probability,
                    seed: b.seed,
                },
                self.clock.now(),
            )
            .map_err(fault_status)?;
        Ok(Response::new(rule_to_pb(rule)))
    }

    async fn list_faults(&self, _: Request<pb::ListFaultsRequest>) -> R<pb::ListFaultsResponse> {
        let rules = self.clock.faults().list(self.clock.now());
        Ok(Response::new(pb::ListFaultsResponse {
            rules: rules.into_iter().map(rule_to_pb).collect(),
        }))
    }

    async fn clear_faults(&self, r: Request<pb::ClearFaultsRequest>) -> R<pb::ClearFaultsResponse> {
        let r = r.into_inner();
        let id = (!r.id.is_empty()).then_some(r.id.as_str());
        let removed = self
            .clock
            .faults()
            .clear(id, r.clear_hits)
            .map_err(fault_status)?;
        Ok(Response::new(pb::ClearFaultsResponse {
            removed: u32::try_from(removed).unwrap_or(u32::MAX),
        }))
    }

    async fn list_fault_hits(
        &self,
        r: Request<pb::ListFaultHitsRequest>,
    ) -> R<pb::ListFaultHitsResponse> {
        let r = r.into_inner();
        let id = (!r.rule_id.is_empty()).then_some(r.rule_id.as_str());
        let hits = self.clock.faults().hits(id);
        Ok(Response::new(pb::ListFaultHitsResponse {
            hits: hits
                .into_iter()
                .map(|h| pb::FaultHit {
                    rule_id: h.rule_id,
                    epoch_seconds: h.epoch_seconds,
                    wall_unix_ms: h.wall_unix_ms,
                    party: h.party,
                    method: h.method,
                    path: h.path,
                    caller: h.caller,
                    action: h.action,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::propagation_server::Propagation for SimServices {
    async fn get_propagation(
        &self,
        _: Request<pb::GetPropagationRequest>,
    ) -> R<pb::PropagationDelays> {
        let p = self.clock.propagation();
        Ok(Response::new(pb::PropagationDelays {
            role_assignment_secs: p.role_assignment_secs(),
            identity_secs: p.identity_secs(),
        }))
    }

    async fn set_propagation(&self, r: Request<pb::PropagationDelays>) -> R<pb::PropagationDelays> {
        let r = r.into_inner();
        if r.role_assignment_secs < 0 || r.identity_secs < 0 {
            return Err(Status::invalid_argument("delays must not be negative"));
        }
        let p = self.clock.propagation();
        p.set(r.role_assignment_secs, r.identity_secs);
        Ok(Response::new(pb::PropagationDelays {
            role_assignment_secs: p.role_assignment_secs(),
            identity_secs: p.identity_secs(),
        }))
    }
}

/// Service names, for health and reflection.
pub const SERVICE_NAMES: [&str; 3] = [
    "misim.sim.v1.Clock",
    "misim.sim.v1.Faults",
    "misim.sim.v1.Propagation",
];
