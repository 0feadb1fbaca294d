//! `misim repair`: moves a party's damaged store aside (never deletes it) so the party starts empty;
//! ARM's reconcile then re-creates what it knows (docs/storage.md).

use std::path::{Path, PathBuf};

pub use crate::cli::RepairArgs;
use anyhow::{bail, Context};

/// The store directory of `party` under `data_dir`, as `misim up` lays it out.
///
/// # Errors
/// An unknown party name.
pub fn store_dir(data_dir: &Path, party: &str) -> anyhow::Result<PathBuf> {
    Ok(match party {
        "arm" | "msrp" | "aad" => data_dir.join(party),
        p => match p.strip_prefix("host:") {
            Some(name) if !name.is_empty() && !name.contains(['/', '\\']) && name != ".." => {
                data_dir.join("hosts").join(name)
            }
            _ => bail!("unknown party {p:?}: use arm, msrp, aad or host:NAME"),
        },
    })
}

/// Runs `misim repair`: refuses while misim holds the data directory, then renames the store
/// directory to `<dir>.damaged-<unix seconds>`.
///
/// # Errors
/// Unknown party, missing store, a running misim, or the rename's I/O error.
pub fn run(args: RepairArgs) -> anyhow::Result<()> {
    let dir = store_dir(&args.data_dir, &args.party)?;
    if !dir.exists() {
        bail!("{} does not exist: nothing to repair", dir.display());
    }
    let lock = args.data_dir.join(".lock");
    if let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
    {
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            bail!(
                "data directory {} is in use by a running `misim up`: stop it first",
                args.data_dir.display()
            );
        }
    }
    let moved = misim_core::store::move_aside(&dir)
        .with_context(|| format!("cannot move {} aside", dir.display()))?;
    println!(
        "moved {} to {}; {} starts empty next time and ARM's reconcile re-creates what it knows \
         (check with `misim doctor` once it is up)",
        dir.display(),
        moved.display(),
        args.party
    );
    Ok(())
}
