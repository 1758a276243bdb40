//! `cargo xtask install`: lays out the release sensor as a distribution
//! package would, under `--prefix` (staged under `--destdir` for
//! packagers):
//!
//! ```text
//! PREFIX/bin/sensor
//! PREFIX/share/xdp-sensor/models/       ONNX models and their cards
//! PREFIX/share/doc/xdp-sensor/          example configuration and inventory
//! PREFIX/share/man/man1/sensor*.1       generated from the CLI
//! PREFIX/share/{bash-completion,zsh,fish}/…   completions
//! PREFIX/lib/systemd/system/xdp-sensor@.service
//! PREFIX/lib/sysusers.d/xdp-sensor.conf, PREFIX/lib/tmpfiles.d/xdp-sensor.conf
//! SYSCONFDIR/sensor/sensor.toml, inventory.toml   only when absent
//! ```
//!
//! The configuration goes to `/etc/sensor` whatever the prefix: it is where
//! `sensor tune` and the unit look, and an operator's edits are never
//! overwritten (as a package manager treats a conffile). The binary finds
//! its models at `../share/xdp-sensor/models` from its own path, so the
//! layout needs no configuration. Manual pages and completions are written
//! by the installed binary itself, which holds the CLI definition.

use std::{
    fs::Permissions,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// `cargo xtask install`.
#[derive(Debug, clap::Args)]
pub(crate) struct InstallArgs {
    /// Installation prefix (absolute).
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage every file under this directory; paths written into the
    /// installed files stay those of --prefix and --sysconfdir.
    #[arg(long, value_name = "DIR")]
    destdir: Option<PathBuf>,
    /// Directory of host configuration (absolute).
    #[arg(long, value_name = "DIR", default_value = "/etc")]
    sysconfdir: PathBuf,
    /// Install this sensor binary instead of building the release one
    /// (the tests install the binary they built).
    #[arg(long, value_name = "FILE", hide = true)]
    sensor_bin: Option<PathBuf>,
}

/// Executables and directories.
const EXEC_MODE: u32 = 0o755;
/// Models, documentation, unit files.
const DATA_MODE: u32 = 0o644;
/// Configuration: root writes, the sensor's group reads it after it has
/// dropped privileges (tmpfiles.d sets that group).
const CONFIG_MODE: u32 = 0o640;

/// The completion scripts: shell, path under the prefix.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "share/bash-completion/completions/sensor"),
    ("zsh", "share/zsh/site-functions/_sensor"),
    ("fish", "share/fish/vendor_completions.d/sensor.fish"),
];

pub(crate) fn install(args: &InstallArgs) -> Result<()> {
    for (option, dir) in [
        ("--prefix", &args.prefix),
        ("--sysconfdir", &args.sysconfdir),
    ] {
        if !dir.is_absolute() {
            bail!("{option} {}: must be an absolute path", dir.display());
        }
    }
    let bin = match &args.sensor_bin {
        Some(b) => b.clone(),
        None => crate::build()?,
    };
    let root = |path: &Path| match &args.destdir {
        Some(d) => d.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_owned(),
    };
    let prefix = root(&args.prefix);
    let sysconf = root(&args.sysconfdir).join("sensor");
    let workspace = crate::workspace_root();

    let installed_bin = prefix.join("bin/sensor");
    copy(&bin, &installed_bin, EXEC_MODE)?;

    // The model registry as it is: the state file, every version
    // directory, and the compatibility links to the active versions (kept
    // as links, so `sensor models promote` can repoint them).
    let models = prefix.join("share/xdp-sensor/models");
    let source = workspace.join("models");
    for entry in std::fs::read_dir(&source).context("reading models/")? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink()
            && (name.ends_with(".onnx") || name.ends_with(".card.json"))
        {
            let link = models.join(&*name);
            let _ = std::fs::remove_file(&link);
            make_dirs(&models)?;
            std::os::unix::fs::symlink(std::fs::read_link(&path)?, &link)
                .with_context(|| format!("linking {}", link.display()))?;
            println!("linked {}", link.display());
        } else if name.ends_with(".onnx") || name.ends_with(".card.json") || name == "registry.json"
        {
            copy(&path, &models.join(&*name), DATA_MODE)?;
        } else if meta.is_dir() && name.starts_with("flow-") {
            for version in std::fs::read_dir(&path)? {
                let version = version?.path();
                let v = version.file_name().unwrap_or_default();
                for file in [format!("{name}.onnx"), format!("{name}.card.json")] {
                    copy(
                        &version.join(&file),
                        &models.join(&*name).join(v).join(&file),
                        DATA_MODE,
                    )?;
                }
            }
        }
    }

    let doc = prefix.join("share/doc/xdp-sensor");
    let example = workspace.join("config/sensor.example.toml");
    let inventory = workspace.join("config/inventory.example.toml");
    copy(&example, &doc.join("sensor.example.toml"), DATA_MODE)?;
    copy(&inventory, &doc.join("inventory.example.toml"), DATA_MODE)?;

    // The working configuration: the example with the installed models
    // and inventory, written only when absent.
    let config_text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?
        .replace(
            "\"../models/",
            &format!("\"{}/share/xdp-sensor/models/", args.prefix.display()),
        )
        .replace("\"inventory.example.toml\"", "\"inventory.toml\"");
    write_if_absent(&sysconf.join("sensor.toml"), &config_text, CONFIG_MODE)?;
    let inventory_text = std::fs::read_to_string(&inventory)
        .with_context(|| format!("reading {}", inventory.display()))?;
    write_if_absent(
        &sysconf.join("inventory.toml"),
        &inventory_text,
        CONFIG_MODE,
    )?;

    let packaging = workspace.join("packaging");
    let substitute = |text: String| {
        text.replace("@BINDIR@", &args.prefix.join("bin").display().to_string())
            .replace(
                "/etc/sensor",
                &args.sysconfdir.join("sensor").display().to_string(),
            )
    };
    let unit = substitute(read(&packaging.join("xdp-sensor@.service.in"))?);
    write(
        &prefix.join("lib/systemd/system/xdp-sensor@.service"),
        unit.as_bytes(),
        DATA_MODE,
    )?;
    let sysusers = read(&packaging.join("sysusers.conf"))?;
    write(
        &prefix.join("lib/sysusers.d/xdp-sensor.conf"),
        sysusers.as_bytes(),
        DATA_MODE,
    )?;
    let tmpfiles = substitute(read(&packaging.join("tmpfiles.conf"))?);
    write(
        &prefix.join("lib/tmpfiles.d/xdp-sensor.conf"),
        tmpfiles.as_bytes(),
        DATA_MODE,
    )?;

    let man = prefix.join("share/man/man1");
    make_dirs(&man)?;
    crate::run_status(Command::new(&installed_bin).arg("man-pages").arg(&man))?;
    for (shell, path) in COMPLETIONS {
        let out = Command::new(&installed_bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {} completions {shell}", installed_bin.display()))?;
        if !out.status.success() {
            bail!(
                "{} completions {shell}: {}",
                installed_bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        write(&prefix.join(path), &out.stdout, DATA_MODE)?;
    }

    println!("installed the sensor under {}", prefix.display());
    if args.destdir.is_none() {
        println!(
            "next, as root: systemd-sysusers && systemd-tmpfiles --create && \
             systemctl daemon-reload && systemctl enable --now xdp-sensor@IFACE \
             (edit {} first)",
            args.sysconfdir.join("sensor/sensor.toml").display()
        );
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path` with `mode`: a running sensor's binary is replaced, not rewritten
/// in place.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    make_dirs(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.install-tmp"));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::set_permissions(&tmp, Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("installing {}", path.display()))
}

/// Creates `dir` and its missing parents with mode 0755, whatever the
/// umask: everyone may read what is installed.
fn make_dirs(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        std::fs::create_dir(d)
            .and_then(|()| std::fs::set_permissions(d, Permissions::from_mode(EXEC_MODE)))
            .with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

/// Like [`write`], unless `path` exists: an operator's configuration is
/// kept as it is.
fn write_if_absent(path: &Path, text: &str, mode: u32) -> Result<()> {
    if path.exists() {
        println!("kept {} (exists)", path.display());
        return Ok(());
    }
    write(path, text.as_bytes(), mode)
}
