//! `misim clock show|advance|set`: the simulated clock every party reads (`misim.sim.v1.Clock` on
//! ARM's gRPC port; `misim up --clock manual` makes it movable). docs/faults-and-time.md.

use anyhow::{bail, Context};
use misim_proto::sim::{self as pb, clock_client::ClockClient};
use misim_proto::tonic::service::interceptor::InterceptedService;
use misim_proto::tonic::transport::Channel;
use serde_json::json;

use super::BearerToken;
use crate::cli::ArmConn;
use crate::cli::{ClockArgs, ClockCommand};

/// Connects the sim services' channel to ARM's gRPC port with the CLI's bearer token.
pub(crate) async fn channel(
    conn: &ArmConn,
) -> anyhow::Result<InterceptedService<Channel, BearerToken>> {
    if !(conn.arm.starts_with("http://") || conn.arm.starts_with("https://")) {
        bail!(
            "--arm / MISIM_ARM must be a URL such as http://127.0.0.1:7700, not {:?}",
            conn.arm
        );
    }
    let token = conn
        .arm_token
        .as_deref()
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .context("MISIM_ARM_TOKEN has characters not allowed in a header")
        })
        .transpose()?;
    let channel = tonic::transport::Endpoint::from_shared(conn.arm.clone())
        .with_context(|| format!("--arm / MISIM_ARM {:?} is not a valid URL", conn.arm))?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach ARM at {}: is `misim up` running? (set --arm or MISIM_ARM)",
                conn.arm
            )
        })?;
    let _ = super::ARM_URL.set(conn.arm.clone());
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

/// Parses `25h`, `50d`, `1d12h`, `90s`, `10m`, `2w` (or plain seconds) into seconds.
///
/// # Errors
/// When it is empty, has an unknown unit or overflows.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("{s:?} is not a duration such as 90s, 10m, 25h, 46d or 1d12h");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let (mut total, mut num) = (0i64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses epoch seconds or `YYYY-MM-DDTHH:MM:SSZ`.
///
/// # Errors
/// For anything else.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad =
        || anyhow::anyhow!("{s:?} is not epoch seconds or a UTC time like 2027-01-31T00:00:00Z");
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + se)
}

fn state_json(s: &pb::ClockState) -> serde_json::Value {
    json!({
        "now": s.rfc3339,
        "epochSeconds": s.epoch_seconds,
        "mode": if s.manual { "manual" } else { "system" },
    })
}

/// Runs `misim clock …`.
///
/// # Errors
/// When ARM is unreachable or refuses (system clock, time going backwards).
pub async fn run(args: ClockArgs) -> anyhow::Result<()> {
    let mut c = ClockClient::new(channel(&args.conn).await?);
    let state = match args.command {
        ClockCommand::Show => c.get_time(pb::GetTimeRequest {}).await,
        ClockCommand::Advance { by } => {
            let seconds = parse_duration(&by)?;
            if seconds <= 0 {
                bail!("advance by a positive duration, e.g. 25h");
            }
            c.advance(pb::AdvanceRequest { seconds }).await
        }
        ClockCommand::Set { time } => {
            c.set_time(pb::SetTimeRequest {
                epoch_seconds: parse_time(&time)?,
            })
            .await
        }
    }
    .map_err(super::status)?
    .into_inner();
    super::print(&state_json(&state));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(parse_duration("25h").unwrap(), 90_000);
        assert_eq!(parse_duration("1d12h").unwrap(), 129_600);
        assert_eq!(parse_duration("46d").unwrap(), 46 * 86_400);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("5d3").is_err());
        assert_eq!(parse_time("1970-01-02T00:00:01Z").unwrap(), 86_401);
        assert_eq!(parse_time("2026-12-01T00:00:00Z").unwrap(), 1_796_083_200);
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }
}
