//! FileEvent -> file bytes appended to a batch buffer, bounded by `max_file_bytes`; opens regular files
//! only and never follows a symlink or opens a FIFO, socket or device.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::version::SkipReason;

/// Why a file was not read, with the size where it is known.
#[derive(Debug)]
pub struct Skip {
    pub reason: SkipReason,
    pub size: Option<u64>,
    /// The underlying error, for the log line.
    pub error: Option<std::io::Error>,
}

impl Skip {
    fn new(reason: SkipReason) -> Skip {
        Skip {
            reason,
            size: None,
            error: None,
        }
    }
}

/// Appends the contents of the regular file at `path` to `buf` and returns its length. `buf` is
/// left as it was when the file is skipped.
pub fn read_file(path: &Path, max_file_bytes: u64, buf: &mut Vec<u8>) -> Result<u64, Skip> {
    // O_NOFOLLOW refuses a symlink swapped in after the walk; O_NONBLOCK keeps a FIFO that
    // appeared in the meantime from blocking the open. fstat below decides what the file is.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(open_error)?;
    let meta = file.metadata().map_err(|e| Skip {
        error: Some(e),
        ..Skip::new(SkipReason::Unreadable)
    })?;
    if !meta.file_type().is_file() {
        return Err(Skip::new(SkipReason::NotRegular));
    }
    let size = meta.len();
    if size > max_file_bytes {
        return Err(Skip {
            size: Some(size),
            ..Skip::new(SkipReason::TooLarge)
        });
    }
    let start = buf.len();
    buf.reserve(size as usize + 1);
    // The file may grow after fstat: read one byte past the limit to notice.
    match read_bounded(file, max_file_bytes + 1, buf) {
        Ok(n) if n > max_file_bytes => {
            buf.truncate(start);
            Err(Skip {
                size: Some(n),
                ..Skip::new(SkipReason::TooLarge)
            })
        }
        Ok(n) => Ok(n),
        Err(e) => {
            buf.truncate(start);
            Err(Skip {
                error: Some(e),
                ..Skip::new(SkipReason::Unreadable)
            })
        }
    }
}

fn read_bounded(file: File, limit: u64, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    let n = file.take(limit).read_to_end(buf)?;
    Ok(n as u64)
}

fn open_error(e: std::io::Error) -> Skip {
    let reason = match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => SkipReason::Vanished,
        _ if e.raw_os_error() == Some(libc::ELOOP) => SkipReason::Symlink,
        _ if e.raw_os_error() == Some(libc::ENXIO) => SkipReason::NotRegular,
        _ => SkipReason::Unreadable,
    };
    Skip {
        error: Some(e),
        ..Skip::new(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_appends_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let mut buf = b"xx".to_vec();
        assert_eq!(read_file(&p, 10, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"xxhello");
        let skip = read_file(&p, 4, &mut buf).unwrap_err();
        assert_eq!(skip.reason, SkipReason::TooLarge);
        assert_eq!(skip.size, Some(5));
        assert_eq!(buf, b"xxhello");
    }

    #[test]
    fn missing_symlink_and_fifo_are_skipped_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let missing = read_file(&dir.path().join("nope"), 10, &mut buf).unwrap_err();
        assert_eq!(missing.reason, SkipReason::Vanished);
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let link = read_file(&dir.path().join("link"), 10, &mut buf).unwrap_err();
        assert_eq!(link.reason, SkipReason::Symlink);
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let skip = read_file(&fifo, 10, &mut buf).unwrap_err();
        assert_eq!(skip.reason, SkipReason::NotRegular);
        assert!(buf.is_empty());
    }
}
