//! Reading the rules file and the templates directory from disk, bounded: regular files
//! only (never a FIFO, a device or a socket, which could block a reload forever or feed it
//! without end), each under a size cap, and a directory walk that follows symlinks without
//! looping and stops at a depth and a file count. The one place rules IO happens.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest rules file read: 100,000 rules take about 15 MiB.
pub const MAX_RULES_FILE: u64 = 64 << 20;
/// The largest template file read; a reply is a few KiB at most.
pub const MAX_TEMPLATE_FILE: u64 = 1 << 20;
/// The most template files read from one directory tree.
pub const MAX_TEMPLATE_FILES: usize = 10_000;
/// The most bytes of templates read in all.
pub const MAX_TEMPLATES_TOTAL: u64 = 64 << 20;
/// The deepest directory under `templates/` that is read (`templates/a/b/…`).
pub const MAX_TEMPLATE_DEPTH: usize = 8;

/// Reads `path` as bytes if it is a regular file (after symlinks) of `cap` bytes at most:
/// a reply's media file.
pub(crate) fn read_bytes(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    check_regular(&meta)?;
    check_size(meta.len(), cap)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let opened = file.metadata()?;
    check_regular(&opened)?;
    let mut bytes = Vec::with_capacity(usize::try_from(opened.len().min(cap)).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes)?;
    check_size(bytes.len() as u64, cap)?;
    Ok(bytes)
}

/// Reads `path` as UTF-8 text if it is a regular file (after symlinks) of `cap` bytes
/// at most.
pub(crate) fn read_text(path: &Path, cap: u64) -> io::Result<String> {
    let bytes = read_bytes(path, cap)?;
    String::from_utf8(bytes).map_err(|_| invalid("is not UTF-8 text".into()))
}

fn check_regular(meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_file() {
        Ok(())
    } else if meta.is_dir() {
        Err(invalid("is a directory, not a file".into()))
    } else {
        Err(invalid(
            "is not a regular file (a FIFO, a device or a socket)".into(),
        ))
    }
}

fn check_size(len: u64, cap: u64) -> io::Result<()> {
    if len > cap {
        Err(invalid(format!("is over the size limit of {cap} bytes")))
    } else {
        Ok(())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One template file: its name (path under the directory, without `.hbs`), its path and text.
pub(crate) struct TemplateFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// Why the templates could not be read: the path it concerns and what went wrong.
pub(crate) struct WalkError {
    pub(crate) path: PathBuf,
    pub(crate) error: io::Error,
}

/// Walks the templates directory `dir` as a load reads it, calling `visit` for each
/// directory and file under it (not `dir` itself). Names that start with `.` are skipped
/// (editors' swap files; Kubernetes' `..data` links of a mounted ConfigMap, whose files also
/// appear at the top). Symlinks are followed, but a directory already walked (the same device
/// and inode) is not walked again, so a link loop ends; more than `MAX_TEMPLATE_DEPTH` levels
/// is an error. `read_templates` and the reload's file stamps (`accounts::fleet::stamp`) both
/// walk this way, so a stamp sees every file a load reads.
pub(crate) fn walk_templates(
    dir: &Path,
    mut visit: impl FnMut(&Path, &fs::Metadata) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    if !dir.exists() {
        return Ok(());
    }
    let at = |path: &Path| {
        let path = path.to_owned();
        move |error| WalkError { path, error }
    };
    let mut seen = HashSet::new();
    let mut pending = vec![(dir.to_owned(), 0)];
    while let Some((current, depth)) = pending.pop() {
        let meta = fs::metadata(&current).map_err(at(&current))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let mut entries: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&current).map_err(at(&current))? {
            entries.push(entry.map_err(at(&current))?.path());
        }
        // In name order, so that a stamp does not depend on the directory's order.
        entries.sort();
        for path in entries {
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            // A broken symlink is reported where it is, as any unreadable file.
            let meta = fs::metadata(&path).map_err(at(&path))?;
            if meta.is_dir() {
                if depth + 1 > MAX_TEMPLATE_DEPTH {
                    return Err(WalkError {
                        path,
                        error: invalid(format!(
                            "is deeper than {MAX_TEMPLATE_DEPTH} directories under the templates directory"
                        )),
                    });
                }
                visit(&path, &meta)?;
                pending.push((path, depth + 1));
            } else {
                visit(&path, &meta)?;
            }
        }
    }
    Ok(())
}

/// Reads every `*.hbs` under `dir` (walked by `walk_templates`), sorted by name.
pub(crate) fn read_templates(dir: &Path) -> Result<Vec<TemplateFile>, WalkError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    walk_templates(dir, |path, meta| {
        if meta.is_dir() || path.extension().is_none_or(|e| e != "hbs") {
            return Ok(());
        }
        if files.len() == MAX_TEMPLATE_FILES {
            return Err(WalkError {
                path: dir.to_owned(),
                error: invalid(format!(
                    "holds more than {MAX_TEMPLATE_FILES} template files"
                )),
            });
        }
        let rel = path.strip_prefix(dir).unwrap_or(path).with_extension("");
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let mut text = read_text(path, MAX_TEMPLATE_FILE).map_err(|error| WalkError {
            path: path.to_owned(),
            error,
        })?;
        total += text.len() as u64;
        if total > MAX_TEMPLATES_TOTAL {
            return Err(WalkError {
                path: dir.to_owned(),
                error: invalid(format!(
                    "holds more than {MAX_TEMPLATES_TOTAL} bytes of templates"
                )),
            });
        }
        // Editors end files with a newline; a reply should not.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        files.push(TemplateFile {
            name,
            path: path.to_owned(),
            text,
        });
        Ok(())
    })?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "wxrules-read-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(files: &[TemplateFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn only_regular_files_under_the_cap_are_read() {
        let dir = Dir::new("regular");
        let file = dir.0.join("a.yaml");
        fs::write(&file, "x".repeat(10)).unwrap();
        assert_eq!(read_text(&file, 10).unwrap(), "x".repeat(10));
        let err = read_text(&file, 9).unwrap_err();
        assert_eq!(err.to_string(), "is over the size limit of 9 bytes");
        let err = read_text(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_text(&dir.0, 10).unwrap_err();
        assert_eq!(err.to_string(), "is a directory, not a file");
        let link = dir.0.join("urandom.yaml");
        std::os::unix::fs::symlink("/dev/urandom", &link).unwrap();
        assert!(read_text(&link, 1 << 20).is_err());
        fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_text(&file, 10).unwrap_err().to_string(),
            "is not UTF-8 text"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let dir = Dir::new("fifo");
        let fifo = dir.0.join("x.hbs");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening it would block this test forever; it must be refused first.
        let err = read_text(&fifo, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_templates(&dir.0).err().unwrap();
        assert_eq!(err.path, fifo);
    }

    #[test]
    fn symlink_loops_end_and_hidden_entries_are_skipped() {
        let dir = Dir::new("loops");
        fs::create_dir_all(dir.0.join("a")).unwrap();
        fs::create_dir_all(dir.0.join("b")).unwrap();
        fs::write(dir.0.join("a/x.hbs"), "x\n").unwrap();
        fs::write(dir.0.join("b/y.hbs"), "y").unwrap();
        // Each directory links to both: an exponential walk without the inode check.
        for (from, name, to) in [
            ("a", "to_a", "../a"),
            ("a", "to_b", "../b"),
            ("b", "to_a", "../a"),
            ("b", "to_b", "../b"),
        ] {
            std::os::unix::fs::symlink(to, dir.0.join(from).join(name)).unwrap();
        }
        fs::create_dir_all(dir.0.join("..data")).unwrap();
        fs::write(dir.0.join("..data/z.hbs"), "z").unwrap();
        fs::write(dir.0.join(".x.hbs.swp"), "z").unwrap();
        let files = read_templates(&dir.0).unwrap_or_else(|e| panic!("{}", e.error));
        // Each file once, under the first name the walk met it by.
        assert_eq!(files.len(), 2, "{:?}", names(&files));
        assert!(names(&files).iter().any(|n| n.ends_with('x')));
        assert!(files.iter().all(|f| f.text == "x" || f.text == "y"));
    }

    #[test]
    fn depth_is_bounded() {
        let dir = Dir::new("depth");
        let mut deep = dir.0.clone();
        for i in 0..=MAX_TEMPLATE_DEPTH {
            deep = deep.join(format!("d{i}"));
        }
        fs::create_dir_all(&deep).unwrap();
        let err = read_templates(&dir.0).err().unwrap();
        assert!(
            err.error.to_string().contains("deeper than"),
            "{}",
            err.error
        );
    }
}
