//! The capture manifest, `tests/data/pcaps/MANIFEST.tsv`: one row per real
//! capture with its provenance, sha256, size, packet count, licence and the
//! label columns the evaluation reads (`expected_class`, `attack_rule`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{LabError, Result};
use crate::replay::AttackRule;

/// The committed captures' directory, relative to the workspace root.
pub const CAPTURES_DIR: &str = "tests/data/pcaps";

/// The committed captures' directory in this checkout.
#[must_use]
pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CAPTURES_DIR)
}

/// One capture of the manifest.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Path relative to the manifest's directory (`flood/x.pcap`).
    pub file: String,
    /// Absolute path.
    pub path: PathBuf,
    pub category: String,
    /// Where it comes from: `repo @ commit, path`.
    pub source: String,
    /// The repository it comes from (`owner/name`): its source group, the
    /// unit training and evaluation are split by (never single packets or
    /// files of one repository on both sides).
    pub repo: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub packets: u64,
    pub duration_s: f64,
    pub content: String,
    pub license: String,
    /// `benign`, or the class of the right alert: `flood`, `scan`,
    /// `bruteforce` or `anomaly`.
    pub expected_class: String,
    pub attack_rule: AttackRule,
}

impl Entry {
    /// The case name: the path relative to the captures' directory without
    /// its last extension (`flood/stopddos_pkt.TCP.synflood.spoofed`).
    /// Unique within a manifest ([`load`] checks), so reports and kept EVE
    /// files of two captures never collide.
    #[must_use]
    pub fn name(&self) -> &str {
        let base_start = self.file.rfind('/').map_or(0, |i| i + 1);
        match self.file[base_start..].rfind('.') {
            Some(dot) if dot > 0 => &self.file[..base_start + dot],
            _ => &self.file,
        }
    }

    /// True for a capture that holds no attack.
    #[must_use]
    pub fn is_benign(&self) -> bool {
        self.expected_class == "benign"
    }

    /// Checks the file's size and sha256 against the manifest.
    ///
    /// # Errors
    /// The file is missing, unreadable, or differs.
    pub fn verify(&self) -> Result<()> {
        let mut f = std::fs::File::open(&self.path).map_err(|source| LabError::Read {
            path: self.path.clone(),
            source,
        })?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|source| LabError::Read {
                path: self.path.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let digest = h.finalize().iter().fold(String::new(), |mut hex, b| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
            hex
        });
        if size != self.size_bytes || digest != self.sha256 {
            return Err(LabError::Manifest {
                path: self.path.clone(),
                reason: format!(
                    "has {size} bytes, sha256 {digest}; the manifest says {} bytes, sha256 {}",
                    self.size_bytes, self.sha256
                ),
            });
        }
        Ok(())
    }
}

/// Expected classes a row may name: `benign`, or the class of the alert
/// that is the right answer (`anomaly` for attacks no rule class names).
const CLASSES: [&str; 5] = ["benign", "flood", "scan", "bruteforce", "anomaly"];

/// Reads `MANIFEST.tsv` (tab-separated, header row naming the columns).
///
/// # Errors
/// The file is unreadable, a column is missing, or a value is malformed.
pub fn load(manifest: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(manifest).map_err(|source| LabError::Read {
        path: manifest.to_owned(),
        source,
    })?;
    let bad = |line: usize, reason: String| LabError::Manifest {
        path: manifest.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty".into()))?;
    let cols: HashMap<&str, usize> = header
        .split('\t')
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    let col = |name: &str| {
        cols.get(name)
            .copied()
            .ok_or_else(|| bad(1, format!("no column `{name}`")))
    };
    let idx = [
        "file",
        "category",
        "repo",
        "path",
        "commit",
        "size_bytes",
        "sha256",
        "packets",
        "duration_s",
        "content",
        "license",
        "expected_class",
        "attack_rule",
    ]
    .map(col);
    let mut ix = [0usize; 13];
    for (slot, r) in ix.iter_mut().zip(idx) {
        *slot = r?;
    }
    let [
        file,
        category,
        repo,
        path,
        commit,
        size,
        sha,
        packets,
        duration,
        content,
        license,
        class,
        rule,
    ] = ix;
    let mut out = Vec::new();
    for (i, l) in lines {
        let n = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != cols.len() {
            return Err(bad(
                n,
                format!("{} fields, the header has {}", f.len(), cols.len()),
            ));
        }
        let num = |k: usize, what: &str| {
            f[k].parse::<u64>()
                .map_err(|e| bad(n, format!("{what} {:?}: {e}", f[k])))
        };
        let expected_class = f[class].to_owned();
        if !CLASSES.contains(&expected_class.as_str()) {
            return Err(bad(
                n,
                format!("expected_class {expected_class:?} is not one of {CLASSES:?}"),
            ));
        }
        let attack_rule: AttackRule = f[rule].parse().map_err(|e| bad(n, e))?;
        if (expected_class == "benign") != (attack_rule == AttackRule::None) {
            return Err(bad(
                n,
                format!(
                    "class {expected_class} contradicts attack rule {:?}",
                    f[rule]
                ),
            ));
        }
        out.push(Entry {
            file: f[file].to_owned(),
            path: dir.join(f[file]),
            category: f[category].to_owned(),
            source: format!("{} @ {}, {}", f[repo], f[commit], f[path]),
            repo: f[repo].to_owned(),
            size_bytes: num(size, "size_bytes")?,
            sha256: f[sha].to_ascii_lowercase(),
            packets: num(packets, "packets")?,
            duration_s: f[duration]
                .parse()
                .map_err(|e| bad(n, format!("duration_s {:?}: {e}", f[duration])))?,
            content: f[content].to_owned(),
            license: f[license].to_owned(),
            expected_class,
            attack_rule,
        });
        let new = &out[out.len() - 1];
        if let Some(old) = out[..out.len() - 1].iter().find(|e| e.name() == new.name()) {
            return Err(bad(
                n,
                format!(
                    "{} has the case name {:?} of {}: names must be unique",
                    new.file,
                    new.name(),
                    old.file
                ),
            ));
        }
    }
    Ok(out)
}

/// The committed manifest.
///
/// # Errors
/// As [`load`].
pub fn committed() -> Result<Vec<Entry>> {
    load(&captures_dir().join("MANIFEST.tsv"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{Capture, Side};

    #[test]
    fn every_committed_capture_matches_its_checksum_and_counts() {
        let entries = committed().unwrap();
        assert!(entries.len() >= 11);
        for e in &entries {
            e.verify().unwrap();
            let c = Capture::load(&e.path).unwrap();
            assert_eq!(c.len() as u64, e.packets, "{}", e.file);
            let span = c.duration().as_secs_f64();
            assert!(span <= e.duration_s + 1e-6, "{}: {span}", e.file);
            // A side the label names occurs in the capture, in that role.
            let roles = c.attack_roles(&e.attack_rule);
            match &e.attack_rule {
                AttackRule::All(Side::Attackers(a)) => {
                    assert!(a.iter().all(|h| roles.attackers.contains(h)), "{}", e.file);
                    assert!(!roles.victims.is_empty(), "{}", e.file);
                }
                AttackRule::All(Side::Victims(v)) => {
                    assert!(v.iter().all(|h| roles.victims.contains(h)), "{}", e.file);
                    assert!(!roles.attackers.is_empty(), "{}", e.file);
                }
                _ => {}
            }
            // Attack captures have an attack frame; benign ones none.
            assert_eq!(
                c.first_attack(&e.attack_rule).is_some(),
                !e.is_benign(),
                "{}",
                e.file
            );
        }
        // Every capture file in the directory is in the manifest.
        let listed: std::collections::BTreeSet<_> =
            entries.iter().map(|e| e.path.clone()).collect();
        let mut stack = vec![captures_dir()];
        while let Some(d) = stack.pop() {
            for ent in std::fs::read_dir(&d).unwrap() {
                let p = ent.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                    assert!(
                        listed
                            .iter()
                            .any(|l| l.canonicalize().unwrap() == p.canonicalize().unwrap()),
                        "{} is not in the manifest",
                        p.display()
                    );
                }
            }
        }
    }

    #[test]
    fn case_names_are_unique_path_stems() {
        let entries = committed().unwrap();
        let names: std::collections::BTreeSet<&str> = entries.iter().map(Entry::name).collect();
        assert_eq!(names.len(), entries.len(), "{names:?}");
        let e = |file: &str| Entry {
            file: file.into(),
            ..entries[0].clone()
        };
        assert_eq!(
            e("flood/stopddos_pkt.TCP.synflood.spoofed.pcap").name(),
            "flood/stopddos_pkt.TCP.synflood.spoofed"
        );
        assert_eq!(
            e("scan/evilfingers_nmap/UDP_SCAN.pcap").name(),
            "scan/evilfingers_nmap/UDP_SCAN"
        );
        assert_eq!(e("benign/.hidden").name(), "benign/.hidden");
        assert_eq!(e("noext").name(), "noext");
    }

    #[test]
    fn a_changed_file_fails_verification() {
        let mut e = committed().unwrap().remove(0);
        e.sha256 = "00".repeat(32);
        let err = e.verify().unwrap_err().to_string();
        assert!(err.contains("sha256") && err.contains(&e.file), "{err}");
    }

    #[test]
    fn malformed_manifests_are_rejected() {
        let dir = std::env::temp_dir().join(format!("manifest-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("MANIFEST.tsv");
        let good = std::fs::read_to_string(captures_dir().join("MANIFEST.tsv")).unwrap();
        std::fs::write(
            &p,
            good.replacen("\tflood\tall victim 10.10.10.10\n", "\tflood\tnone\n", 1),
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("contradicts"), "{e}");
        std::fs::write(&p, good.replacen("\tscan\tall", "\tprobe\tall", 1)).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("expected_class"));
        // `anomaly` is a class; a second row with the same case name is not.
        std::fs::write(&p, good.replacen("\tscan\tall", "\tanomaly\tall", 1)).unwrap();
        load(&p).unwrap();
        let first = good.lines().nth(1).unwrap();
        let twin = first.replacen(".pcap\t", ".pcapng\t", 1);
        assert_ne!(first, twin);
        std::fs::write(&p, format!("{good}{twin}\n")).unwrap();
        let e = load(&p).unwrap_err().to_string();
        let line = format!("line {}:", good.lines().count() + 1);
        assert!(e.contains("unique") && e.contains(&line), "{e}");
        std::fs::write(&p, "file\tsha256\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("no column"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
