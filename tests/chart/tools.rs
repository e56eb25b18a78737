//! The programs the chart tests run: helm (scripts/helm-bin builds it) and kubernetes-validate
//! (scripts/kubernetes-validate-bin installs it), found where those scripts put them, and the
//! chart rendered into documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/mirrorfleet")
}

/// `$var`, else `${MIRRORFLEET_TOOLS:-/var/tmp/mirrorfleet-tools}/<sub>/<version>/<bin>` with
/// the version read from the `version=` line of `script` (the one place it is written).
fn tool(var: &str, script: &str, sub: &str, bin: &str) -> PathBuf {
    let path = match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => {
            let text = std::fs::read_to_string(repo_root().join(script)).unwrap();
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("version="))
                .unwrap_or_else(|| panic!("{script} has no version= line"));
            let tools = std::env::var_os("MIRRORFLEET_TOOLS")
                .unwrap_or_else(|| "/var/tmp/mirrorfleet-tools".into());
            Path::new(&tools).join(sub).join(version).join(bin)
        }
    };
    assert!(
        path.is_file(),
        "{} is missing: run {script} (scripts/test does) or point {var} at it",
        path.display()
    );
    path
}

pub fn helm_path() -> PathBuf {
    tool("MIRRORFLEET_HELM", "scripts/helm-bin", "helm", "helm")
}

pub fn kubernetes_validate_path() -> PathBuf {
    tool(
        "MIRRORFLEET_KUBERNETES_VALIDATE",
        "scripts/kubernetes-validate-bin",
        "kubernetes-validate",
        "bin/kubernetes-validate",
    )
}

/// A helm command with its own (empty) configuration, cache and data directories under
/// `home`, and `kubeconfig` if given.
pub fn helm(home: &Path, kubeconfig: Option<&Path>) -> Command {
    let mut cmd = Command::new(helm_path());
    for (var, dir) in [
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, home.join(dir));
    }
    cmd.env_remove("KUBECONFIG");
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd
}

/// Runs `cmd`, printing the command line and its output (the test log shows every helm
/// run); returns the output whatever the exit status.
pub fn run_logged(cmd: &mut Command) -> Output {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!("$ {}", line.join(" "));
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for l in text(&out.stdout).lines().chain(text(&out.stderr).lines()) {
        eprintln!("  | {l}");
    }
    eprintln!("  exit: {}", out.status);
    out
}

/// `helm template` of the chart with `args` (e.g. `-f FILE`, `--set k=v`): the rendered
/// text, or helm's error output.
pub fn template(args: &[&str]) -> Result<String, String> {
    let home = tempfile::tempdir().unwrap();
    let out = helm(home.path(), None)
        .args(["template", "mirrorfleet"])
        .arg(chart_dir())
        .args(["--namespace", "fleet"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a multi-document YAML text (empty documents left out).
pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// The object of `kind` named `name` among `docs`.
pub fn object<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("no {kind}/{name} among {have:?}")
        })
}

/// The first container named `name` of a workload's pod template.
pub fn container<'a>(workload: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {workload}"))
}

/// A container's arguments, as strings.
pub fn args(container: &serde_json::Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}
