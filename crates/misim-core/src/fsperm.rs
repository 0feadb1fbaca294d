//! Private files: every directory that holds key material is 0700 and every file in it 0600, whatever
//! the process umask, so another local user cannot read an identity's private key or the token-signing
//! key (Azure keeps them inside the service; a world-readable key would let anyone forge tokens).

use std::io;
use std::path::Path;

/// Sets the process umask to 077, so every file misim creates afterwards (sled's files, snapshots,
/// exported PEMs) is private to the user. Call once at the start of the binary.
pub fn private_umask() {
    #[cfg(unix)]
    {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

/// Creates `dir` (and missing parents) and makes `dir` itself 0700.
///
/// # Errors
/// The I/O error of creating the directory or changing its mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Writes `contents` to `path` as a new 0600 file (replacing an existing one).
///
/// # Errors
/// The I/O error of writing the file or changing its mode.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    // An existing file keeps its old mode on open: set it explicitly.
    set_mode(path, 0o600)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Makes `dir` and every directory below it 0700 and every file below it 0600 (a store's directory
/// after opening it: sled creates its files with the umask's mode).
///
/// # Errors
/// The first I/O error met.
pub fn restrict_tree(dir: &Path) -> io::Result<()> {
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            restrict_tree(&path)?;
        } else if ty.is_file() {
            set_mode(&path, 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn restrict_tree_makes_dirs_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("db"), "x").unwrap();
        std::fs::set_permissions(sub.join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_tree(&dir.path().join("a")).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("db")), 0o600);
    }

    #[test]
    fn write_private_replaces_a_world_readable_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }
}
