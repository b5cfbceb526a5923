//! Pulling from a registry (the OCI distribution API): manifest or index → the manifest for
//! this host's platform → config → layers. Every byte is verified against its digest;
//! layers stream to files on disk, so memory stays bounded whatever their size; layers
//! already in the store are not downloaded at all. Where to pull from (mirrors first, plain
//! HTTP or not, blocked) is registries.conf's word (`registries_conf.rs`); logins are the
//! auth files' (`auth.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::auth::AuthEnv;
use super::digest::{self, Digest, HashingReader};
use super::error::{ImageError, IoContext};
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use super::opened::{LayerJob, Opened, Options, Scratch, new_scratch};
use super::progress::{Counting, Progress};
use super::registries_conf::{ConfEnv, Endpoint, RegistriesConf};
use crate::definition::source::{ImageName, RegistryReference};

/// What mm accepts for a manifest, in order of preference.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// The most mm reads into memory for a manifest, index or config.
const JSON_LIMIT: u64 = 4 << 20;

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS with a certificate that verifies.
    Verified,
    /// registries.conf's `insecure = true`: HTTPS without verifying the certificate, and
    /// plain HTTP when HTTPS cannot be spoken there (as podman does).
    Insecure,
    /// `--tls-verify=false`: plain HTTP.
    PlainHttp,
}

/// A registry session for one repository.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    /// For an insecure registry reached over HTTPS: the plain-HTTP base to fall back to.
    fallback: Option<String>,
    repository: String,
    credentials: Option<String>,
    /// `Authorization` header value once a challenge has been answered.
    authorization: Option<String>,
}

fn network(what: String, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry(format!("{what}: {e}"))
}

impl Registry {
    /// A session for `reference`, reached as `transport` says, logged in with
    /// `credentials` (base64 `user:password`) if the registry asks.
    pub fn new(
        reference: &RegistryReference,
        transport: Transport,
        credentials: Option<String>,
    ) -> Self {
        let host = if reference.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            reference.registry.as_str()
        };
        let base = |scheme: &str| format!("{scheme}://{host}/v2/{}", reference.repository);
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(transport == Transport::Insecure)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("mm/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            base: base(if transport == Transport::PlainHttp {
                "http"
            } else {
                "https"
            }),
            fallback: (transport == Transport::Insecure).then(|| base("http")),
            repository: reference.repository.clone(),
            credentials,
            authorization: None,
        }
    }

    /// GET `path` under the repository, answering one auth challenge if the registry asks.
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, ImageError> {
        // At most: HTTPS given up for plain HTTP, a challenge answered, the answer used.
        let mut answered = false;
        for _ in 0..3 {
            let url = format!("{}/{path}", self.base);
            let mut request = self.agent.get(&url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            if let Some(authorization) = &self.authorization {
                request = request.header("Authorization", authorization);
            }
            let response = match request.call() {
                Ok(response) => response,
                // An insecure registry that does not speak TLS: plain HTTP from now on.
                Err(_) if self.fallback.is_some() => {
                    self.base = self.fallback.take().unwrap_or_default();
                    continue;
                }
                Err(e) => {
                    let hint = if url.starts_with("https:") {
                        " (if this registry speaks plain HTTP, add --tls-verify=false, or mark \
                         it `insecure = true` in registries.conf)"
                    } else {
                        ""
                    };
                    return Err(network(format!("GET {url}"), format!("{e}{hint}")));
                }
            };
            self.fallback = None;
            match response.status().as_u16() {
                200 => return Ok(response),
                401 if !answered => {
                    answered = true;
                    let challenge = response
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    self.authorization = Some(self.answer(&challenge)?);
                }
                401 => {
                    return Err(ImageError::Registry(format!(
                        "GET {url}: unauthorized; log in with `podman login` or `docker login`"
                    )));
                }
                404 => return Err(ImageError::RegistryNotFound(format!("GET {url}"))),
                status => return Err(ImageError::Registry(format!("GET {url}: HTTP {status}"))),
            }
        }
        Err(ImageError::Registry(format!(
            "GET {}/{path}: no answer over HTTPS nor plain HTTP",
            self.base
        )))
    }

    /// The `Authorization` header for a `WWW-Authenticate` challenge: Basic with the
    /// stored credentials, or a Bearer token from the realm the registry names.
    fn answer(&self, challenge: &str) -> Result<String, ImageError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let credentials = self.credentials.clone().ok_or_else(|| {
                ImageError::Registry(
                    "the registry asks for a login; use `podman login` or `docker login`"
                        .to_owned(),
                )
            })?;
            return Ok(format!("Basic {credentials}"));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ImageError::Registry(format!(
                "unsupported auth challenge `{challenge}`"
            )));
        }
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| ImageError::Registry(format!("no realm in `{challenge}`")))?;
        let mut request = self.agent.get(realm.as_str());
        if let Some(service) = params.get("service") {
            request = request.query("service", service);
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        request = request.query("scope", &scope);
        if let Some(credentials) = &self.credentials {
            request = request.header("Authorization", &format!("Basic {credentials}"));
        }
        let mut response = request
            .call()
            .map_err(|e| network(format!("GET {realm}"), e))?;
        if response.status() != 200 {
            return Err(ImageError::Registry(format!(
                "the token service {realm} said HTTP {}",
                response.status()
            )));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(JSON_LIMIT)
            .read_to_vec()
            .map_err(|e| network(format!("GET {realm}"), e))?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| network(format!("the token from {realm}"), e))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| ImageError::Registry(format!("no token from {realm}")))?;
        Ok(format!("Bearer {token}"))
    }

    /// A small document (manifest, index, config), verified against `digest` if known.
    fn document(
        &mut self,
        path: &str,
        accept: Option<&str>,
        expect: Option<&Descriptor>,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let mut response = self.get(path, accept)?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(JSON_LIMIT)
            .read_to_vec()
            .map_err(|e| network(format!("reading {path}"), e))?;
        if let Some(desc) = expect {
            digest::verify(
                (Digest::of(&bytes), bytes.len() as u64),
                &desc.digest,
                Some(desc.size),
            )
            .map_err(|mismatch| ImageError::Corrupt {
                what: "document",
                digest: desc.digest.clone(),
                mismatch,
            })?;
        }
        Ok((bytes, media_type))
    }

    /// Downloads a blob into `dir`, verified while it streams.
    fn download(
        &mut self,
        desc: &Descriptor,
        dir: &Path,
        progress: &Progress,
    ) -> Result<PathBuf, ImageError> {
        let response = self.get(&format!("blobs/{}", desc.digest), None)?;
        let path = dir.join(desc.digest.hex());
        let mut file = std::fs::File::create(&path).at(&path)?;
        let item = progress.item(format!("download {}", desc.digest.short()), desc.size);
        let mut reader = HashingReader::new(Counting {
            inner: response.into_body().into_reader(),
            item: &item,
        });
        let mut buf = vec![0u8; 1 << 18];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| network(format!("downloading {}", desc.digest), e))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).at(&path)?;
        }
        digest::verify(reader.finish(), &desc.digest, Some(desc.size)).map_err(|mismatch| {
            ImageError::Corrupt {
                what: "layer",
                digest: desc.digest.clone(),
                mismatch,
            }
        })?;
        item.done("downloaded and verified");
        Ok(path)
    }
}

/// Pulls `reference` from where registries.conf says (its mirrors in order, then its
/// location; the first that has it wins): documents into memory (verified), the layers the
/// destination does not have yet into the scratch directory `dir`, which the result keeps.
pub fn pull(
    reference: &RegistryReference,
    options: &Options<'_>,
    dir: tempfile::TempDir,
) -> Result<Opened, ImageError> {
    let conf = RegistriesConf::load(&ConfEnv::from_process())?;
    pull_with(&conf, reference, options, dir)
}

/// Pulls an image named as podman names them: a short name is resolved by registries.conf
/// (an alias, or each search registry in turn, as its short-name-mode allows).
pub fn pull_name(name: &ImageName, options: &Options<'_>) -> Result<Opened, ImageError> {
    let conf = RegistriesConf::load(&ConfEnv::from_process())?;
    let resolved = conf.resolve(name)?;
    let Some((last, first)) = resolved.candidates.split_last() else {
        return Err(ImageError::Registry(format!(
            "no registry to pull {name} from"
        )));
    };
    let say = |reference: &RegistryReference| {
        if let Some(how) = &resolved.how {
            options
                .progress
                .note(&format!("{name}: trying {reference} ({how})"));
        }
    };
    let mut failed = Vec::new();
    let scratch = || new_scratch(options.scratch_in, "pull.");
    for reference in first {
        say(reference);
        match pull_with(&conf, reference, options, scratch()?) {
            Ok(opened) => return Ok(opened),
            Err(e @ (ImageError::Registry(_) | ImageError::RegistryNotFound(_))) => {
                failed.push(format!("{reference}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    say(last);
    pull_with(&conf, last, options, scratch()?).map_err(|e| match (e, failed.is_empty()) {
        (e, true) => e,
        (ImageError::RegistryNotFound(why), false) => {
            ImageError::RegistryNotFound(format!("{why} (tried first: {})", failed.join("; ")))
        }
        (ImageError::Registry(why), false) => {
            ImageError::Registry(format!("{why} (tried first: {})", failed.join("; ")))
        }
        (e, false) => e,
    })
}

/// [`pull`] with registries.conf already read.
fn pull_with(
    conf: &RegistriesConf,
    reference: &RegistryReference,
    options: &Options<'_>,
    dir: tempfile::TempDir,
) -> Result<Opened, ImageError> {
    let endpoints = conf.endpoints(reference)?;
    let auth_files = AuthEnv::from_process(options.authfile).files();
    let mut failed: Vec<String> = Vec::new();
    let last = endpoints.len() - 1;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let transport = match (options.tls_verify, endpoint.insecure) {
            (false, _) => Transport::PlainHttp,
            (true, true) => Transport::Insecure,
            (true, false) => Transport::Verified,
        };
        let Endpoint {
            reference: from, ..
        } = endpoint;
        let credentials = super::auth::credentials(&auth_files, &from.registry, &from.repository)?;
        let registry = Registry::new(from, transport, credentials);
        match pull_from(registry, reference, options, &dir) {
            Ok(mut opened) => {
                opened.scratch = Some(Scratch::new(dir));
                return Ok(opened);
            }
            Err(ImageError::Registry(why)) if i < last => failed.push(why),
            Err(ImageError::RegistryNotFound(why)) if i < last => {
                failed.push(format!("{why}: no such image or blob"));
            }
            Err(ImageError::Registry(why)) if !failed.is_empty() => {
                return Err(ImageError::Registry(format!(
                    "{why} (mirrors tried first: {})",
                    failed.join("; ")
                )));
            }
            Err(ImageError::RegistryNotFound(why)) if !failed.is_empty() => {
                return Err(ImageError::RegistryNotFound(format!(
                    "{why} (mirrors tried first: {})",
                    failed.join("; ")
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Err(ImageError::Registry(format!(
        "no registry to pull {reference} from"
    )))
}

/// Pulls `reference` (as the user wrote it: its digest pin holds whatever mirror serves it)
/// through `registry`.
fn pull_from(
    mut registry: Registry,
    reference: &RegistryReference,
    options: &Options<'_>,
    dir: &tempfile::TempDir,
) -> Result<Opened, ImageError> {
    let (arch, have, progress) = (options.arch, options.have, options.progress);
    let target = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_owned(),
    };
    let (bytes, media_type) =
        registry.document(&format!("manifests/{target}"), Some(ACCEPT), None)?;
    let first = Digest::of(&bytes);
    if let Some(pinned) = &reference.digest
        && *pinned != first
    {
        return Err(ImageError::Corrupt {
            what: "manifest",
            digest: pinned.clone(),
            mismatch: digest::Mismatch::Digest {
                expected: pinned.clone(),
                actual: first,
            },
        });
    }
    let mut blobs = vec![(first.clone(), bytes.clone())];
    let is_index = media_type.starts_with(oci::INDEX) || media_type.starts_with(oci::DOCKER_LIST);
    let (manifest_digest, manifest_bytes, index) = if is_index {
        let index: Index = parse("index", &first, &bytes)?;
        let desc = super::layout::pick_platform(&index.manifests, arch)?.clone();
        let (bytes, _) = registry.document(
            &format!("manifests/{}", desc.digest),
            Some(ACCEPT),
            Some(&desc),
        )?;
        blobs.push((desc.digest.clone(), bytes.clone()));
        (desc.digest, bytes, Some(first))
    } else {
        (first, bytes, None)
    };
    let manifest: Manifest = parse("manifest", &manifest_digest, &manifest_bytes)?;
    let (config_bytes, _) = registry.document(
        &format!("blobs/{}", manifest.config.digest),
        None,
        Some(&manifest.config),
    )?;
    let config: ImageConfig = parse("config", &manifest.config.digest, &config_bytes)?;
    blobs.push((manifest.config.digest.clone(), config_bytes));
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::LayerCount {
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let blob = if have(diff_id) {
            PathBuf::new()
        } else {
            registry.download(desc, dir.path(), progress)?
        };
        layers.push(LayerJob {
            blob,
            desc: desc.clone(),
            diff_id: diff_id.clone(),
        });
    }
    Ok(Opened {
        manifest: manifest_digest,
        index,
        config_digest: manifest.config.digest,
        config,
        layers,
        blobs,
        scratch: None,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadJson {
        what,
        digest: digest.clone(),
        why: e.to_string(),
    })
}

/// `realm="…",service="…"` into a map.
fn challenge_params(text: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.insert(key, value.to_owned());
        rest = next.trim_start_matches(',').trim();
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
    }
}
