//! A `.tar`, `.tar.gz`/`.tgz` or `.tar.zst` stream -> one upsert [`FileEvent`] per member that is not a
//! directory, with the member's bytes inline (up to `max_file_bytes`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crossbeam_channel::Sender;
use tar::EntryType as TarType;

use crate::epochs::EpochClock;

use super::{EntryType, EventKind, FileEvent, Member, Origin, SourceError, now_us};

/// How to read an archive.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Leading path components to drop, like `tar --strip-components`.
    pub strip_components: usize,
    /// Members above this size are not read.
    pub max_file_bytes: u64,
    /// Take every member, `.git/` included.
    pub no_ignore: bool,
}

/// What an archive held.
#[derive(Debug, Default, Clone)]
pub struct ArchiveReport {
    pub members: u64,
}

/// Whether `path` looks like an archive this module reads (by name).
pub fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tzst"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Reads the archive at `path` and sends an event per member, stamped by `clock`. Members sent before a
/// corrupt or truncated part stay sent; the error names the member where reading stopped.
pub fn read_archive(
    path: &Path,
    source: &str,
    clock: &EpochClock,
    options: &ArchiveOptions,
    events: &Sender<FileEvent>,
) -> Result<ArchiveReport, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let stream = decompressor(&mut reader, path)?;
    let mut archive = tar::Archive::new(stream);
    let fail = |member: &str, reason: String| SourceError::Archive {
        archive: path.to_path_buf(),
        member: member.to_string(),
        reason,
    };
    let mut report = ArchiveReport::default();
    // A path has at most one version per epoch: a member that repeats an earlier one (appended
    // with `tar -r`, which replaces it when extracted) goes into a new epoch.
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut last = String::from("(first member)");
    let entries = archive
        .entries()
        .map_err(|e| fail(&last, format!("cannot read: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| fail(&format!("after {last}"), format!("corrupt header: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        last = String::from_utf8_lossy(&raw).into_owned();
        let Some(relative) = normalize(&raw, options.strip_components) else {
            continue;
        };
        if !options.no_ignore && relative.split(|&b| b == b'/').any(|c| c == b".git") {
            continue;
        }
        let (entry_type, member) = match entry.header().entry_type() {
            TarType::Directory | TarType::XGlobalHeader | TarType::XHeader => continue,
            TarType::GNULongName | TarType::GNULongLink => continue,
            TarType::Regular | TarType::Continuous | TarType::GNUSparse => {
                let size = entry.size();
                if size > options.max_file_bytes {
                    (EntryType::File, Member::TooLarge(size))
                } else {
                    let mut content = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut content)
                        .map_err(|e| fail(&last, format!("cannot read contents: {e}")))?;
                    (EntryType::File, Member::Regular(content))
                }
            }
            TarType::Symlink => (EntryType::Symlink, Member::Symlink),
            TarType::Link => {
                // A hard link's bytes are those of an earlier member, which a stream no longer has.
                tracing::warn!(member = %last, "hard link in archive recorded as not_regular");
                (EntryType::NotRegular, Member::NotRegular)
            }
            _ => (EntryType::NotRegular, Member::NotRegular),
        };
        report.members += 1;
        let event = FileEvent {
            source: source.to_string(),
            path: relative,
            kind: EventKind::Upsert,
            epoch: 0, // stamped when sent
            observed_at_us: now_us(),
            entry: entry_type,
            origin: Origin::Member(member),
        };
        if !seen.insert(event.path.clone()) {
            clock.seal(false, &[]);
            seen.clear();
            seen.insert(event.path.clone());
        }
        if clock.send(events, event).is_err() {
            break;
        }
    }
    Ok(report)
}

/// Picks the decompressor from the stream's magic bytes, so a misnamed archive still reads.
fn decompressor<'a>(
    reader: &'a mut BufReader<File>,
    path: &Path,
) -> Result<Box<dyn Read + 'a>, SourceError> {
    use std::io::BufRead;
    let head = reader.fill_buf().map_err(|source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::Decoder::with_buffer(reader).map_err(|source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// A member name as a source-relative path: leading `/` and `.` components dropped, then
/// `strip` components; None when nothing is left.
fn normalize(raw: &[u8], strip: usize) -> Option<Vec<u8>> {
    let components: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if components.len() <= strip || components.iter().any(|c| *c == b"..") {
        return None;
    }
    Some(components[strip..].join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn member_names_are_normalized_like_tar() {
        assert_eq!(normalize(b"./a/b.c", 0).unwrap(), b"a/b.c");
        assert_eq!(normalize(b"/abs/x", 0).unwrap(), b"abs/x");
        assert_eq!(
            normalize(b"linux-6.1/kernel/fork.c", 1).unwrap(),
            b"kernel/fork.c"
        );
        assert_eq!(normalize(b"./top/", 1), None);
        assert_eq!(normalize(b"a/../../etc/passwd", 0), None);
    }
}
