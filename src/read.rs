//! FileEvent -> file bytes appended to a batch buffer, bounded by `max_file_bytes`; opens regular files
//! only and never follows a symlink or opens a FIFO, socket or device.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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

/// Directories whose handles a [`Reader`] keeps.
const CACHED_DIRECTORIES: usize = 4;

/// Reads files, opening each relative to a handle on its directory: the kernel then resolves one
/// path component per file instead of the whole path, which is much of the cost of opening a
/// small file. The handles are dropped by [`Reader::forget_directories`] (once per batch), so
/// a directory renamed or replaced later is looked up again.
#[derive(Debug)]
pub struct Reader {
    max_file_bytes: u64,
    /// Most recently used first.
    directories: Vec<(Box<[u8]>, OwnedFd)>,
    /// The NUL-terminated name being opened.
    name: Vec<u8>,
}

impl Reader {
    pub fn new(max_file_bytes: u64) -> Reader {
        Reader {
            max_file_bytes,
            directories: Vec::with_capacity(CACHED_DIRECTORIES),
            name: Vec::new(),
        }
    }

    /// The size above which a file is not read.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Closes the cached directory handles.
    pub fn forget_directories(&mut self) {
        self.directories.clear();
    }

    /// Appends the contents of the regular file at `path` to `buf` and returns its length. `buf`
    /// is left as it was when the file is skipped.
    pub fn read(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<u64, Skip> {
        let max_file_bytes = self.max_file_bytes;
        let file = self.open(path).map_err(open_error)?;
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
        // The file may grow after fstat: read one byte past the limit to notice.
        match read_bounded(file, size, max_file_bytes + 1, buf) {
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

    /// Opens `path` for reading, relative to a cached handle on its directory. O_NOFOLLOW
    /// refuses a symlink swapped in after the walk; O_NONBLOCK keeps a FIFO that appeared in
    /// the meantime from blocking the open. The caller's fstat decides what the file is.
    fn open(&mut self, path: &Path) -> std::io::Result<File> {
        const FLAGS: libc::c_int =
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // A plain split at the last '/': walked paths are clean, and anything else is opened
        // by its whole path.
        let bytes = path.as_os_str().as_bytes();
        let split = memchr::memrchr(b'/', bytes)
            .filter(|&i| i > 0)
            .map(|i| (&bytes[..i], &bytes[i + 1..]))
            .filter(|(_, name)| !matches!(*name, b"" | b"." | b".."));
        let Some((directory, name)) = split else {
            return OpenOptions::new().read(true).custom_flags(FLAGS).open(path);
        };
        let dirfd = self.directory(directory)?;
        self.name.clear();
        self.name.extend_from_slice(name);
        self.name.push(0);
        // SAFETY: `name` is NUL-terminated and has no other NUL (it is one path component);
        // `dirfd` is an open descriptor owned by the cache.
        let fd = unsafe { libc::openat(dirfd, self.name.as_ptr().cast(), FLAGS) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// A handle on `directory`, from the cache or opened (O_PATH: it only anchors lookups).
    fn directory(&mut self, directory: &[u8]) -> std::io::Result<RawFd> {
        if let Some(i) = self.directories.iter().position(|(d, _)| **d == *directory) {
            self.directories[..=i].rotate_right(1);
            return Ok(self.directories[0].1.as_raw_fd());
        }
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(Path::new(OsStr::from_bytes(directory)))?;
        let fd = handle.as_raw_fd();
        if self.directories.len() == CACHED_DIRECTORIES {
            self.directories.pop();
        }
        self.directories
            .insert(0, (directory.into(), OwnedFd::from(handle)));
        Ok(fd)
    }
}

/// Reads `file` (of `size` bytes when it was stat'd) to its end, at most `limit` bytes. A short
/// read that brings exactly `size` bytes is the end of a regular file, so a file that did not
/// change since the fstat takes one read call.
fn read_bounded(file: File, size: u64, limit: u64, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    let start = buf.len();
    buf.reserve((size + 1).min(limit) as usize);
    let mut total = 0u64;
    while total < limit {
        if buf.len() == buf.capacity() {
            buf.reserve((buf.len() - start).max(8192));
        }
        let room = (limit - total).min((buf.capacity() - buf.len()) as u64) as usize;
        // SAFETY: the kernel writes at most `room` bytes into the spare capacity at the end of
        // `buf`, and only the bytes it reports are added to the length.
        let n = unsafe {
            libc::read(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(buf.len()).cast(),
                room,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                continue;
            }
            buf.truncate(start);
            return Err(error);
        }
        let n = n as usize;
        // SAFETY: the first `n` bytes of the spare capacity were just written by `read`.
        unsafe { buf.set_len(buf.len() + n) };
        total += n as u64;
        if n == 0 || (n < room && total == size) {
            break;
        }
    }
    Ok(total)
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
        assert_eq!(Reader::new(10).read(&p, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"xxhello");
        let skip = Reader::new(4).read(&p, &mut buf).unwrap_err();
        assert_eq!(skip.reason, SkipReason::TooLarge);
        assert_eq!(skip.size, Some(5));
        assert_eq!(buf, b"xxhello");
    }

    #[test]
    fn reads_through_directory_handles_until_they_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(nested.join("big"), &big).unwrap();
        std::fs::write(nested.join("small"), b"old").unwrap();
        std::fs::write(dir.path().join("top"), b"top").unwrap();
        let mut reader = Reader::new(1 << 20);
        let mut buf = Vec::new();
        assert_eq!(reader.read(&nested.join("big"), &mut buf).unwrap(), 100_000);
        assert_eq!(reader.read(&nested.join("small"), &mut buf).unwrap(), 3);
        assert_eq!(reader.read(&dir.path().join("top"), &mut buf).unwrap(), 3);
        assert_eq!(buf.len(), 100_006);
        assert_eq!(&buf[..100_000], &big[..]);
        assert_eq!(&buf[100_000..], b"oldtop");
        let missing = reader.read(&nested.join("nope"), &mut buf).unwrap_err();
        assert_eq!(missing.reason, SkipReason::Vanished);
        let missing = reader
            .read(&dir.path().join("x/nope"), &mut buf)
            .unwrap_err();
        assert_eq!(missing.reason, SkipReason::Vanished);
        // The directory is replaced: a forgotten handle is looked up again.
        std::fs::rename(&nested, dir.path().join("a/moved")).unwrap();
        std::fs::create_dir(&nested).unwrap();
        std::fs::write(nested.join("small"), b"new!").unwrap();
        reader.forget_directories();
        buf.clear();
        assert_eq!(reader.read(&nested.join("small"), &mut buf).unwrap(), 4);
        assert_eq!(buf, b"new!");
        let too_large = Reader::new(99_999).read(&dir.path().join("a/moved/big"), &mut buf);
        assert_eq!(too_large.unwrap_err().size, Some(100_000));
        assert_eq!(buf, b"new!");
    }

    #[test]
    fn missing_symlink_and_fifo_are_skipped_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let missing = Reader::new(10)
            .read(&dir.path().join("nope"), &mut buf)
            .unwrap_err();
        assert_eq!(missing.reason, SkipReason::Vanished);
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let link = Reader::new(10)
            .read(&dir.path().join("link"), &mut buf)
            .unwrap_err();
        assert_eq!(link.reason, SkipReason::Symlink);
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let skip = Reader::new(10).read(&fifo, &mut buf).unwrap_err();
        assert_eq!(skip.reason, SkipReason::NotRegular);
        assert!(buf.is_empty());
    }
}
