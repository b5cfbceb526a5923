//! Registry logins where podman and docker keep them, read as containers-auth.json(5) says:
//! `--authfile FILE` or `$REGISTRY_AUTH_FILE` alone when given; else the primary file (root:
//! `/run/containers/0/auth.json`; a user: `$XDG_RUNTIME_DIR/containers/auth.json`, else
//! `/run/containers/UID/auth.json`), then `$XDG_CONFIG_HOME/containers/auth.json`
//! (`~/.config/…`), then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. The first
//! file with an entry for the image wins: a `credHelpers` entry for its registry, an `auths`
//! key from the most specific (`host/ns/repo`) to the registry (`host`), or docker's
//! `credsStore`. Helpers are docker's: `docker-credential-NAME get`, the registry on stdin.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::error::ImageError;

/// What the search for credentials depends on, gathered from the environment once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthEnv {
    /// `--authfile FILE`, which (like `$REGISTRY_AUTH_FILE`) is then the only file read.
    pub authfile: Option<PathBuf>,
    pub registry_auth_file: Option<PathBuf>,
    pub uid: u32,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
}

impl AuthEnv {
    /// From this process's environment, with `--authfile` if given.
    pub fn from_process(authfile: Option<&Path>) -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            authfile: authfile.map(Path::to_owned),
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            uid: rustix::process::geteuid().as_raw(),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME"),
            docker_config: var("DOCKER_CONFIG"),
        }
    }

    /// The files to read, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        if let Some(file) = self.authfile.as_ref().or(self.registry_auth_file.as_ref()) {
            return vec![file.clone()];
        }
        let mut files = Vec::new();
        files.push(match (&self.xdg_runtime_dir, self.uid) {
            (Some(dir), uid) if uid != 0 => dir.join("containers/auth.json"),
            (_, uid) => PathBuf::from(format!("/run/containers/{uid}/auth.json")),
        });
        let config_home = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")));
        if let Some(dir) = config_home {
            files.push(dir.join("containers/auth.json"));
        }
        match (&self.docker_config, &self.home) {
            (Some(dir), _) => files.push(dir.join("config.json")),
            (None, Some(home)) => files.push(home.join(".docker/config.json")),
            (None, None) => {}
        }
        files
    }
}

/// A login: `user:password`, base64, as the `Authorization: Basic` header takes it.
pub type Basic = String;

/// The login for `repository` on `registry` (as `host[:port]`, docker.io as such), from the
/// first of `files` with an entry for it. A missing file is skipped; one that cannot be read
/// or parsed, an entry that is not base64 of `user:password`, or a helper that fails is an
/// error (not a silent anonymous pull).
pub fn credentials(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<Basic>, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AuthFile {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
        #[serde(default)]
        cred_helpers: BTreeMap<String, String>,
        creds_store: Option<String>,
    }
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
    }
    for file in files {
        let text = match std::fs::read(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ImageError::Io {
                    path: file.clone(),
                    source,
                });
            }
        };
        let bad = |why: String| ImageError::Credentials {
            file: file.clone(),
            why,
        };
        let parsed: AuthFile =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not an auth file ({e})")))?;
        if let Some(helper) = parsed.cred_helpers.get(registry) {
            match helper_get(helper, registry).map_err(bad)? {
                Some(found) => return Ok(Some(found)),
                None => continue,
            }
        }
        let found = keys(registry, repository)
            .into_iter()
            .find_map(|key| Some((parsed.auths.get(&key)?.auth.clone(), key)));
        // docker writes `"auths": {"host": {}}` beside a `credsStore`: no `auth` there.
        if let Some((Some(auth), key)) = found {
            let usable = base64::engine::general_purpose::STANDARD
                .decode(&auth)
                .is_ok_and(|raw| raw.contains(&b':'));
            if !usable {
                return Err(bad(format!(
                    "the `auth` of `{key}` is not base64 of USER:PASSWORD"
                )));
            }
            return Ok(Some(auth));
        }
        if let Some(store) = &parsed.creds_store
            && let Some(found) = helper_get(store, registry).map_err(bad)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The keys an auth file may have for an image, most specific first: `host/ns/repo`,
/// `host/ns`, `host`, and the URL forms docker writes (`https://host`, docker.io's
/// `https://index.docker.io/v1/`).
fn keys(registry: &str, repository: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut path = format!("{registry}/{repository}");
    loop {
        keys.push(path.clone());
        match path.rsplit_once('/') {
            Some((parent, _)) => path = parent.to_owned(),
            None => break,
        }
    }
    keys.push(format!("https://{registry}"));
    keys.push(format!("http://{registry}"));
    if registry == "docker.io" {
        keys.push("https://index.docker.io/v1/".to_owned());
        keys.push("index.docker.io".to_owned());
    }
    keys
}

/// `docker-credential-NAME get` with `registry` on its standard input: its login, `None`
/// when it has none for the registry ("credentials not found"), or why it failed.
fn helper_get(name: &str, registry: &str) -> Result<Option<Basic>, String> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("the credential helper `{program}` cannot be run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| format!("writing to `{program}`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `{program}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{program} get` failed ({}): {}",
            out.status,
            format!("{stdout}{stderr}").trim()
        ));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`{program} get` did not answer with Username and Secret: {e}"))?;
    if reply.username == "<token>" {
        return Err(format!(
            "`{program}` holds an identity token for {registry}, which mm cannot use yet"
        ));
    }
    Ok(Some(
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", reply.username, reply.secret)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_read_in_containers_auth_json_order() {
        let user = AuthEnv {
            uid: 1000,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            home: Some("/home/u".into()),
            ..AuthEnv::default()
        };
        assert_eq!(
            user.files(),
            [
                PathBuf::from("/run/user/1000/containers/auth.json"),
                "/home/u/.config/containers/auth.json".into(),
                "/home/u/.docker/config.json".into(),
            ]
        );
        let root = AuthEnv {
            uid: 0,
            xdg_runtime_dir: Some("/run/user/0".into()),
            xdg_config_home: Some("/cfg".into()),
            home: Some("/root".into()),
            docker_config: Some("/dc".into()),
            ..AuthEnv::default()
        };
        assert_eq!(
            root.files(),
            [
                PathBuf::from("/run/containers/0/auth.json"),
                "/cfg/containers/auth.json".into(),
                "/dc/config.json".into(),
            ]
        );
        let given = AuthEnv {
            registry_auth_file: Some("/env.json".into()),
            ..user.clone()
        };
        assert_eq!(given.files(), [PathBuf::from("/env.json")]);
        let flag = AuthEnv {
            authfile: Some("/flag.json".into()),
            ..given
        };
        assert_eq!(flag.files(), [PathBuf::from("/flag.json")]);
    }

    #[test]
    fn credentials_come_from_the_first_file_that_has_them_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        // "u:p"
        let good = file("good.json", r#"{"auths":{"r.example":{"auth":"dTpw"}}}"#);
        let other = file("other.json", r#"{"auths":{"elsewhere":{"auth":"dTpw"}}}"#);
        let absent = dir.path().join("absent.json");
        let files = [absent.clone(), other.clone(), good.clone()];
        assert_eq!(
            credentials(&files, "r.example", "a/b").unwrap().as_deref(),
            Some("dTpw")
        );
        assert_eq!(
            credentials(&[absent, other], "r.example", "a/b").unwrap(),
            None
        );

        let broken = file("broken.json", "{not json");
        let e = credentials(&[broken.clone(), good.clone()], "r.example", "a").unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "registry credentials in {}: not an auth file (",
                broken.display()
            )),
            "{e}"
        );
        let garbled = file(
            "garbled.json",
            r#"{"auths":{"r.example":{"auth":"bm9jb2xvbg=="}}}"#,
        );
        let e = credentials(&[garbled.clone(), good], "r.example", "a").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "registry credentials in {}: the `auth` of `r.example` is not base64 of USER:PASSWORD",
                garbled.display()
            )
        );
    }

    #[test]
    fn the_most_specific_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        // "ns:1" for the namespace, "host:2" for the registry.
        std::fs::write(
            &path,
            r#"{"auths":{"r.example:5000":{"auth":"aG9zdDoy"},"r.example:5000/ns":{"auth":"bnM6MQ=="}}}"#,
        )
        .unwrap();
        let files = [path];
        assert_eq!(
            credentials(&files, "r.example:5000", "ns/app")
                .unwrap()
                .as_deref(),
            Some("bnM6MQ==")
        );
        assert_eq!(
            credentials(&files, "r.example:5000", "other/app")
                .unwrap()
                .as_deref(),
            Some("aG9zdDoy")
        );
        assert_eq!(
            keys("docker.io", "library/busybox")[..3],
            [
                "docker.io/library/busybox",
                "docker.io/library",
                "docker.io"
            ]
        );
    }
}
