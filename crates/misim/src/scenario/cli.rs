//! `misim scenario run|validate|schema`.

use anyhow::{bail, Context};

use super::model::{self, ClockMode};
use super::runner::{Runner, ScenarioResult, StepResult, Target};
use crate::cli::{ScenarioArgs, ScenarioCommand};
use crate::endpoints::Endpoints;

fn load(path: &std::path::Path) -> anyhow::Result<model::Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    model::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)
}

/// Text report of one step.
pub fn step_text(r: &StepResult) -> String {
    let mut s = format!(
        "  {} {:>2}. {} ({:.0} ms)",
        if r.passed { "PASS" } else { "FAIL" },
        r.index,
        r.name,
        r.elapsed_ms
    );
    for f in &r.failures {
        s.push_str(&format!("\n        {f}"));
    }
    if !r.diff.is_empty() {
        s.push_str("\n        --- expected\n        +++ actual");
        for l in r.diff.lines() {
            s.push_str(&format!("\n        {l}"));
        }
    }
    s
}

/// Runs `sc` from `source` against a running system (`target`), printing steps unless `quiet`.
pub async fn run_one(
    target: Target,
    source: &str,
    sc: &model::Scenario,
    quiet: bool,
) -> anyhow::Result<ScenarioResult> {
    let mut runner = Runner::new(target)?;
    if !quiet {
        crate::client::print_text(&format!("scenario: {} ({source})", sc.name));
    }
    Ok(runner
        .run(source, sc, |r| {
            if !quiet {
                crate::client::print_text(&step_text(r));
            }
        })
        .await)
}

/// The JUnit XML of `results` (quick-junit, <https://docs.rs/quick-junit>).
pub fn junit(results: &[ScenarioResult]) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("misim scenarios");
    for r in results {
        let mut suite = TestSuite::new(format!("{} ({})", r.name, r.source));
        for s in &r.steps {
            let status = if s.passed {
                TestCaseStatus::success()
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(s.failures.join("; "));
                st.set_description(s.diff.clone());
                st
            };
            let mut case = TestCase::new(format!("{:02} {}", s.index, s.name), status);
            case.set_classname(r.source.clone());
            case.set_time(std::time::Duration::from_secs_f64(s.elapsed_ms / 1000.0));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    Ok(report.to_string()?)
}

/// `misim scenario …`
///
/// # Errors
/// When a file cannot be read or parsed, misim cannot be reached or started, or a step failed.
pub async fn run(a: ScenarioArgs) -> anyhow::Result<()> {
    match a.command {
        ScenarioCommand::Schema => {
            print!("{}", model::schema_json());
            Ok(())
        }
        ScenarioCommand::Validate { files } => {
            let mut bad = 0;
            for f in &files {
                match load(f) {
                    Ok(sc) => crate::client::print_text(&format!(
                        "{}: ok ({}, {} steps)",
                        f.display(),
                        sc.name,
                        sc.steps.len()
                    )),
                    Err(e) => {
                        eprintln!("{e}");
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} of {} files are not valid scenarios", files.len());
            }
            Ok(())
        }
        ScenarioCommand::Run {
            files,
            embedded,
            junit: junit_out,
            json,
            data_dir,
        } => {
            let scenarios = files
                .iter()
                .map(|f| load(f).map(|s| (f.display().to_string(), s)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut results = Vec::new();
            for (source, sc) in &scenarios {
                let r = if embedded {
                    let cfg = crate::embedded::EmbeddedConfig {
                        manual_clock: sc.clock == Some(ClockMode::Manual),
                        ..Default::default()
                    };
                    let running = crate::embedded::start(cfg)
                        .await
                        .context("cannot start an embedded misim")?;
                    let target = Target {
                        endpoints: running.endpoints.clone(),
                        data_dir: running.data_dir.clone(),
                        misim_bin: super::misim_bin(),
                    };
                    let r = run_one(target, source, sc, json).await;
                    running.shutdown().await;
                    r?
                } else {
                    let file = data_dir.join(crate::endpoints::ENDPOINTS_FILE);
                    let text = std::fs::read_to_string(&file).with_context(|| {
                        format!(
                            "cannot read {}: start misim (misim up --data-dir {}) or use --embedded",
                            file.display(),
                            data_dir.display()
                        )
                    })?;
                    let endpoints: Endpoints = serde_json::from_str(&text).with_context(|| {
                        format!("{} is not misim's endpoints file", file.display())
                    })?;
                    let target = Target {
                        endpoints,
                        data_dir: data_dir.clone(),
                        misim_bin: super::misim_bin(),
                    };
                    run_one(target, source, sc, json).await?
                };
                if !json {
                    let failed = r.steps.iter().filter(|s| !s.passed).count();
                    crate::client::print_text(&format!(
                        "  => {} ({} steps, {failed} failed, {:.1} s)\n",
                        if r.passed { "passed" } else { "FAILED" },
                        r.steps.len(),
                        r.elapsed_ms / 1000.0
                    ));
                }
                results.push(r);
            }
            if let Some(out) = junit_out {
                std::fs::write(&out, junit(&results)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            if json {
                crate::client::print(&serde_json::to_value(&results)?);
            }
            let failed: Vec<&str> = results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.source.as_str())
                .collect();
            if !failed.is_empty() {
                bail!(
                    "{} of {} scenarios failed: {}",
                    failed.len(),
                    results.len(),
                    failed.join(", ")
                );
            }
            Ok(())
        }
    }
}
