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

/// Reads the archive at `path` and sends an event per member, stamped by `clock`.
///
/// Succeeds only for a whole archive: every member complete, the end-of-archive marker present and
/// a compressed stream read to its end, so that its checksum is verified. Anything else (not a tar
/// archive, an empty file, a cut inside a member, between members or in the compressed trailer, a
/// bad checksum, data after the compressed stream) is an error naming the archive. Members sent
/// before the failure stay sent: the caller must not take them as a complete snapshot.
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
    let (stream, compressed) = decompressor(&mut reader, path)?;
    let mut archive = tar::Archive::new(Counted::new(stream));
    let fail = |member: &str, reason: String| SourceError::Archive {
        archive: path.to_path_buf(),
        member: member.to_string(),
        reason,
    };
    let damaged = |reason: String| SourceError::Damaged {
        archive: path.to_path_buf(),
        reason,
    };
    let mut report = ArchiveReport::default();
    // A path has at most one version per epoch: a member that repeats an earlier one (appended
    // with `tar -r`, which replaces it when extracted) goes into a new epoch.
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    // Headers read, skipped ones included: a failure before the first is not a tar archive at all.
    let mut headers = 0u64;
    // Entries whose whole name --strip-components took away.
    let mut stripped = 0u64;
    let mut last = String::from("(first member)");
    let entries = archive
        .entries()
        .map_err(|e| fail(&last, format!("cannot read: {e}")))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) if headers == 0 => {
                return Err(SourceError::NotAnArchive {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
            // tar-rs skips the rest of the previous member (data and padding) before it reads a
            // header, so a member cut short that was not read (too large) fails here.
            Err(e) => return Err(fail(&format!("after {last}"), format!("{e}"))),
        };
        headers += 1;
        let raw = entry.path_bytes().into_owned();
        last = String::from_utf8_lossy(&raw).into_owned();
        let Some(relative) = normalize(&raw, options.strip_components) else {
            stripped += 1;
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
                    // tar-rs reads a member through `take(size)`, which ends early, without an
                    // error, when the stream does: a member cut short would pass as a shorter file.
                    if content.len() as u64 != size {
                        return Err(fail(
                            &last,
                            format!(
                                "cut short: the archive ends after {} of its {size} bytes",
                                content.len()
                            ),
                        ));
                    }
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
            // The graph stopped; it reports why.
            return Ok(report);
        }
    }
    if stripped > 0 && stripped == headers {
        // Every member was stripped away: taken as a snapshot, an empty tree would delete every
        // path of the source. tar extracts nothing either; here it is refused.
        return Err(damaged(format!(
            "--strip-components {} leaves nothing of its {headers} entries",
            options.strip_components
        )));
    }
    let mut stream = archive.into_inner();
    if stream.ended {
        // tar-rs ends its entries at a stream that ends where a header is due, which is a cut
        // between members (or an empty file), not the end of an archive: GNU tar and tar-rs's
        // own builder write an all-zero block there.
        return Err(if headers == 0 {
            SourceError::NotAnArchive {
                path: path.to_path_buf(),
                reason: if stream.bytes == 0 {
                    "it holds no data".to_string()
                } else {
                    "it ends before a tar header or end-of-archive marker".to_string()
                },
            }
        } else {
            damaged(format!(
                "truncated: it ends after member {last} without the end-of-archive marker"
            ))
        });
    }
    // tar-rs stopped at one all-zero block. The marker is two; a lone zero block followed by data
    // is a zeroed-out header (GNU tar warns "A lone zero block"), and taking it as the end would
    // drop every member after it. A stream that ends inside the marker lost nothing.
    let mut block = [0u8; 512];
    let filled = read_up_to(&mut stream, &mut block)
        .map_err(|e| damaged(format!("cannot read the end-of-archive marker: {e}")))?;
    if block[..filled].iter().any(|&b| b != 0) {
        return Err(damaged(format!(
            "a zero block after member {last} is followed by more data, not by the end-of-archive marker"
        )));
    }
    if compressed {
        // The checksum of a gzip member or zstd frame is checked when its end is read; data after
        // the last one is an error of the decoder too.
        std::io::copy(&mut stream, &mut std::io::sink())
            .map_err(|e| damaged(format!("compressed stream after the last member: {e}")))?;
    }
    Ok(report)
}

/// The decompressed stream, noting how much was read and whether it ended: tar-rs takes an end
/// of stream where a header is due as the end of the archive.
struct Counted<R> {
    inner: R,
    bytes: u64,
    ended: bool,
}

impl<R: Read> Counted<R> {
    fn new(inner: R) -> Counted<R> {
        Counted {
            inner,
            bytes: 0,
            ended: false,
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Fills `buf` from `reader` until it is full or the stream ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Picks the decompressor from the stream's magic bytes, so a misnamed archive still reads; true
/// with it when the stream is compressed.
fn decompressor<'a>(
    reader: &'a mut BufReader<File>,
    path: &Path,
) -> Result<(Box<dyn Read + 'a>, bool), SourceError> {
    use std::io::BufRead;
    let head = reader.fill_buf().map_err(|source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(reader)), true))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::Decoder::with_buffer(reader).map_err(|source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((Box::new(decoder), true))
    } else {
        Ok((Box::new(reader), false))
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
    use super::*;
    use std::io::Write;

    /// A tar of regular files, as tar-rs's builder writes it (with the end-of-archive marker).
    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn members() -> Vec<u8> {
        // Incompressible enough that a cut in the compressed stream falls inside a member.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        tar_of(&[
            ("a.txt", b"alpha\n"),
            ("b.bin", &noise),
            ("c.txt", b"gamma\n"),
        ])
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd_with_checksum(data: &[u8]) -> Vec<u8> {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// What `gzip -t` / `zstd -t` check: the whole compressed stream decodes.
    fn decodes_whole(bytes: &[u8]) -> bool {
        let mut out = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .is_ok()
        } else {
            zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut out))
                .is_ok()
        }
    }

    /// The (path, content) of each member read from `bytes` written as `name`, or the error.
    fn read(
        name: &str,
        bytes: &[u8],
        max_file_bytes: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let clock = EpochClock::new(1, None);
        let (tx, rx) = crossbeam_channel::unbounded();
        let options = ArchiveOptions {
            strip_components: 0,
            max_file_bytes,
            no_ignore: false,
        };
        let result = read_archive(&path, "s", &clock, &options, &tx);
        drop(tx);
        let sent = rx
            .iter()
            .map(|e| {
                let content = match e.origin {
                    Origin::Member(Member::Regular(c)) => c,
                    other => format!("{other:?}").into_bytes(),
                };
                (String::from_utf8(e.path).unwrap(), content)
            })
            .collect();
        match result {
            Ok(_) => Ok(sent),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(name), "{message}");
                Err(message)
            }
        }
    }

    fn assert_damaged(name: &str, bytes: &[u8], want: &str) {
        match read(name, bytes, 1 << 20) {
            Ok(sent) => panic!("{name} was read whole: {} members", sent.len()),
            Err(message) => assert!(message.contains(want), "{name}: {message}"),
        }
    }

    #[test]
    fn whole_archives_read_in_every_compression() {
        let tar = members();
        for (name, bytes) in [
            ("x.tar", tar.clone()),
            ("x.tar.gz", gzip(&tar)),
            ("x.tar.zst", zstd_with_checksum(&tar)),
            // A misnamed archive reads by its content.
            ("plain.tar.gz", tar.clone()),
        ] {
            let sent = read(name, &bytes, 1 << 20).unwrap();
            let names: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(names, ["a.txt", "b.bin", "c.txt"], "{name}");
            assert_eq!(sent[2].1, b"gamma\n");
        }
        // `cat a.gz b.gz`: one tar across two gzip members.
        let (head, tail) = tar.split_at(7000);
        let multi = [gzip(head), gzip(tail)].concat();
        assert_eq!(read("multi.tar.gz", &multi, 1 << 20).unwrap().len(), 3);
    }

    #[test]
    fn a_bad_checksum_in_a_compressed_trailer_is_an_error() {
        let tar = members();
        let good = gzip(&tar);
        let n = good.len();
        // gzip trailer: CRC32 then ISIZE, little-endian.
        for (what, at) in [("crc", n - 8), ("isize", n - 1)] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(!decodes_whole(&bad), "{what}: the fixture is not damaged");
            assert_damaged(&format!("{what}.tar.gz"), &bad, "is damaged");
        }
        let good = zstd_with_checksum(&tar);
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 2] ^= 0x01; // in the frame's content checksum
        assert!(!decodes_whole(&bad), "the zstd fixture is not damaged");
        assert_damaged("crc.tar.zst", &bad, "is damaged");
    }

    #[test]
    fn a_compressed_stream_cut_short_or_followed_by_garbage_is_an_error() {
        let tar = members();
        let gz = gzip(&tar);
        let zst = zstd_with_checksum(&tar);
        let cases = [
            ("mid.tar.gz", gz[..gz.len() / 2].to_vec()),
            ("trailer.tar.gz", gz[..gz.len() - 3].to_vec()),
            ("nocrc.tar.gz", gz[..gz.len() - 8].to_vec()),
            (
                "garbage.tar.gz",
                [&gz[..], b"garbage after the stream"].concat(),
            ),
            ("mid.tar.zst", zst[..zst.len() / 2].to_vec()),
            ("trailer.tar.zst", zst[..zst.len() - 2].to_vec()),
            (
                "garbage.tar.zst",
                [&zst[..], b"garbage after the stream"].concat(),
            ),
        ];
        for (name, bytes) in cases {
            assert!(!decodes_whole(&bytes), "{name}: the fixture is not damaged");
            match read(name, &bytes, 1 << 20) {
                Ok(sent) => panic!("{name} was read whole: {} members", sent.len()),
                Err(message) => assert!(message.contains(name), "{message}"),
            }
        }
    }

    #[test]
    fn a_tar_cut_inside_a_member_or_between_members_is_an_error() {
        let tar = members();
        // b.bin's data starts at 512 (a's header) + 512 (a's data block) + 512 (b's header).
        let inside = &tar[..1536 + 100];
        assert_damaged("inside.tar", inside, "cut short");
        // The same cut in a member too large to be read, which tar-rs skips.
        match read("skipped.tar", inside, 10) {
            Ok(sent) => panic!("read whole: {} members", sent.len()),
            Err(message) => assert!(message.contains("b.bin"), "{message}"),
        }
        // A cut in the padding after the last data block of b.bin.
        let padding = 1536 + 20_000 + 10;
        assert!(read("padding.tar", &tar[..padding], 1 << 20).is_err());
        // A cut exactly at a header: tar-rs alone takes this as the end of the archive.
        let boundary = 1536 + 20_000_usize.div_ceil(512) * 512;
        assert_damaged(
            "boundary.tar",
            &tar[..boundary],
            "without the end-of-archive marker",
        );
        // Before the marker: every member is there, but nothing says the archive ends.
        let all = tar.len() - 1024;
        assert_damaged(
            "nomarker.tar",
            &tar[..all],
            "without the end-of-archive marker",
        );
        // A cut inside the marker, after one zero block or in the middle of the second, lost nothing.
        assert_eq!(
            read("lone.tar", &tar[..all + 512], 1 << 20).unwrap().len(),
            3
        );
        assert_eq!(
            read("half.tar", &tar[..all + 700], 1 << 20).unwrap().len(),
            3
        );
    }

    #[test]
    fn a_zeroed_header_inside_an_archive_is_not_its_end() {
        let mut tar = members();
        // b.bin's header zeroed: tar-rs would end the archive there and lose b.bin and c.txt.
        tar[1024..1536].fill(0);
        assert_damaged("zeroed.tar", &tar, "followed by more data");
    }

    #[test]
    fn what_is_not_a_tar_archive_is_refused() {
        let mut state = 7u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 33) as u8
            })
            .collect();
        let cases: [(&str, Vec<u8>); 6] = [
            ("empty.tar", Vec::new()),
            ("random.tar", random),
            ("text.tar", b"just some text, not an archive\n".repeat(40)),
            ("short.tar", b"tiny".to_vec()),
            ("text.tar.gz", gzip(&b"hello, not a tar\n".repeat(100))),
            ("empty.tar.gz", gzip(b"")),
        ];
        for (name, bytes) in cases {
            assert_damaged(name, &bytes, "does not look like a tar archive");
        }
        assert_damaged(
            "empty.tar.zst",
            &zstd_with_checksum(b""),
            "does not look like a tar archive",
        );
    }

    #[test]
    fn an_empty_archive_is_an_empty_snapshot() {
        // `tar cf x.tar --files-from /dev/null`: the marker padded to a 10 KiB record.
        for (name, bytes) in [
            ("record.tar", vec![0u8; 10240]),
            ("marker.tar", vec![0u8; 1024]),
            ("marker.tar.gz", gzip(&[0u8; 10240])),
            ("marker.tar.zst", zstd_with_checksum(&[0u8; 1024])),
        ] {
            assert_eq!(read(name, &bytes, 1 << 20).unwrap(), [], "{name}");
        }
    }

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
