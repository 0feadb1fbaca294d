//! The `misim.scenario.v1.Scenario` gRPC service: runs a scenario document against the misim that
//! serves it, streaming each step's result, so any language can drive scenarios.

use std::pin::Pin;

use misim_proto::scenario as pb;
use tokio_stream::wrappers::ReceiverStream;

use super::runner::{Runner, StepResult, Target};

/// The service over one running system.
#[derive(Clone, Debug)]
pub struct ScenarioService {
    target: Target,
}

impl ScenarioService {
    /// The service running scenarios against `target`.
    pub fn new(target: Target) -> Self {
        ScenarioService { target }
    }

    /// The tonic server of this service.
    pub fn server(self) -> pb::scenario_server::ScenarioServer<Self> {
        pb::scenario_server::ScenarioServer::new(self)
    }
}

fn to_pb(r: &StepResult) -> pb::StepResult {
    pb::StepResult {
        index: r.index as u32,
        name: r.name.clone(),
        passed: r.passed,
        failures: r.failures.clone(),
        diff: r.diff.clone(),
        elapsed_ms: r.elapsed_ms,
        observed_json: r.observed.to_string(),
        done: false,
        scenario: String::new(),
    }
}

/// Stream of `Run`.
pub type RunStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::StepResult, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::scenario_server::Scenario for ScenarioService {
    type RunStream = RunStream;

    async fn run(
        &self,
        req: tonic::Request<pb::RunScenarioRequest>,
    ) -> Result<tonic::Response<RunStream>, tonic::Status> {
        let r = req.into_inner();
        let source = if r.source_name.is_empty() {
            "scenario".to_string()
        } else {
            r.source_name
        };
        let sc =
            super::model::parse(&source, &r.document).map_err(tonic::Status::invalid_argument)?;
        let mut runner =
            Runner::new(self.target.clone()).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let (step_tx, mut step_rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(s) = step_rx.recv().await {
                        if tx.send(Ok(s)).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let result = runner
                .run(&source, &sc, |s| {
                    let _ = step_tx.send(to_pb(s));
                })
                .await;
            drop(step_tx);
            let _ = forward.await;
            let failed = result.steps.iter().filter(|s| !s.passed).count();
            let _ = tx
                .send(Ok(pb::StepResult {
                    index: 0,
                    name: format!("{} steps, {failed} failed", result.steps.len()),
                    passed: result.passed,
                    elapsed_ms: result.elapsed_ms,
                    done: true,
                    scenario: result.name,
                    ..Default::default()
                }))
                .await;
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
