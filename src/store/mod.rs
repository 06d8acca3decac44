//! Where inputs and outputs live: a local path, or an object in an object store named by a URL
//! (`s3://bucket/key`, `gs://bucket/key`, `az://container/key`; `file:///path` is a local path).
//!
//! The rest of jerex carries a location as a [`Path`] whose text is the URL, so the engine's
//! path arithmetic (`out.join("relations")`, file names, `starts_with`) works for both, and asks
//! this module for the I/O: [`Location::of`] tells the two apart; the functions below (read,
//! write, create-if-absent, conditional replace, list, delete, copy) do on an object store what
//! their file-system twins in [`crate::durable`] and `std::fs` do. [`read`] streams Parquet row
//! groups with range requests; [`write`] uploads parts (multipart when large).
//!
//! Stores are opened with each provider's usual credential chain (`AmazonS3Builder::from_env()`
//! etc.), the job's `[storage]` section ([`StorageConfig`]) on top, and are cached per bucket.

pub mod read;
pub mod write;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// URL schemes of object stores.
const SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// The job file's `[storage]` section: how object stores are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Endpoint of an S3-compatible store (MinIO, Ceph, a test server); default
    /// `$AWS_ENDPOINT_URL`, else AWS itself. An `http://` endpoint allows plain HTTP.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Any further `object_store` option of the provider, by its name (`aws_region`,
    /// `google_service_account`, `azure_storage_account_name`, `timeout`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Retries of a failed request (throttling, server errors, unreachable); default 10.
    #[serde(default)]
    pub retries: Option<usize>,
    /// Seconds after which a request is not retried any more; default 180.
    #[serde(default)]
    pub retry_timeout_s: Option<u64>,
}

impl StorageConfig {
    fn retry(&self) -> object_store::RetryConfig {
        let mut retry = object_store::RetryConfig::default();
        if let Some(n) = self.retries {
            retry.max_retries = n;
        }
        if let Some(s) = self.retry_timeout_s {
            retry.retry_timeout = std::time::Duration::from_secs(s);
        }
        retry
    }
}

static CONFIG: RwLock<Option<StorageConfig>> = RwLock::new(None);
static STORES: Mutex<Vec<(String, Arc<dyn ObjectStore>)>> = Mutex::new(Vec::new());

/// Sets how stores are opened from now on (a job's `[storage]`); stores opened before are
/// forgotten.
pub fn configure(config: &StorageConfig) {
    *CONFIG.write().unwrap() = Some(config.clone());
    STORES.lock().unwrap().clear();
}

/// Whether `path` names an object store location (`s3://...`, not `file://`).
pub fn is_url(path: &Path) -> bool {
    scheme(path).is_some_and(|s| SCHEMES.contains(&s.as_str()))
}

fn scheme(path: &Path) -> Option<String> {
    let s = path.to_str()?;
    let (scheme, rest) = s.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.');
    (valid && !rest.is_empty()).then(|| scheme.to_ascii_lowercase())
}

/// A job file's path value as a location: `file://` URLs become local paths, object store
/// URLs stay as they are, anything else is a local path. `None` for a scheme jerex cannot read.
pub fn resolve(spec: &str) -> std::result::Result<Option<PathBuf>, String> {
    let path = Path::new(spec);
    match scheme(path).as_deref() {
        None => Ok(None),
        Some("file") => {
            let url = url::Url::parse(spec).map_err(|e| format!("'{spec}' is not a URL: {e}"))?;
            let local = url
                .to_file_path()
                .map_err(|()| format!("'{spec}' is not a local file URL"))?;
            Ok(Some(local))
        }
        Some(s) if SCHEMES.contains(&s) => Ok(Some(path.to_path_buf())),
        Some(s) => Err(format!(
            "'{spec}': unknown scheme {s}:// (use a path, file://, s3://, gs:// or az://)"
        )),
    }
}

/// An object store location: the store of its bucket, and the key below it.
#[derive(Clone)]
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub key: Key,
    /// The location as the user wrote it, for messages.
    pub url: String,
    /// `scheme://bucket`.
    pub root: String,
}

impl Remote {
    fn error(&self, e: object_store::Error) -> Error {
        Error::store(&self.url, e)
    }
}

/// Where a path points: the local file system or an object store.
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

impl Location {
    /// Opens the store of an object store URL (cached per bucket); a local path as it is.
    pub fn of(path: &Path) -> Result<Location> {
        if !is_url(path) {
            return Ok(Location::Local(path.to_path_buf()));
        }
        let url = path.to_string_lossy().into_owned();
        let (scheme, rest) = url.split_once("://").expect("is_url checked the scheme");
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!("{url}: no bucket in the URL")));
        }
        let root = format!("{}://{bucket}", scheme.to_ascii_lowercase());
        let store = open_store(&root)?;
        let key = Key::parse(key.trim_matches('/'))
            .map_err(|e| Error::Config(format!("{url}: not a valid object key: {e}")))?;
        Ok(Location::Remote(Remote {
            store,
            key,
            url,
            root,
        }))
    }

    /// The remote location, or `None` for a local path.
    pub fn remote(path: &Path) -> Result<Option<Remote>> {
        match Location::of(path)? {
            Location::Remote(r) => Ok(Some(r)),
            Location::Local(_) => Ok(None),
        }
    }
}

fn open_store(root: &str) -> Result<Arc<dyn ObjectStore>> {
    if let Some((_, s)) = STORES.lock().unwrap().iter().find(|(r, _)| r == root) {
        return Ok(Arc::clone(s));
    }
    let config = CONFIG.read().unwrap().clone().unwrap_or_default();
    let store = build_store(root, &config)?;
    STORES
        .lock()
        .unwrap()
        .push((root.to_string(), Arc::clone(&store)));
    Ok(store)
}

fn build_store(root: &str, config: &StorageConfig) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    let bad = |e: object_store::Error| {
        Error::Config(format!("{root}: cannot open the object store: {e}"))
    };
    let key_error = |key: &str, e: object_store::Error| {
        Error::Config(format!(
            "storage.options: {key:?} is not an option of {root}: {e}"
        ))
    };
    let scheme = root.split_once("://").map_or(root, |(s, _)| s);
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_url(root.replacen("s3a://", "s3://", 1))
                .with_retry(config.retry());
            if let Some(e) = &config.endpoint {
                b = b.with_endpoint(e);
            }
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| key_error(k, e))?, v);
            }
            let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(bad)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(root)
                .with_retry(config.retry());
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| key_error(k, e))?, v);
            }
            Arc::new(b.build().map_err(bad)?)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(root)
                .with_retry(config.retry());
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| key_error(k, e))?, v);
            }
            Arc::new(b.build().map_err(bad)?)
        }
    };
    Ok(store)
}

/// Runs `f` to completion on the process's I/O runtime (from any thread that is not itself
/// running async code).
pub fn block_on<F: Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("jerex-io")
                .enable_all()
                .build()
                .expect("the I/O runtime starts")
        })
        .block_on(f)
}

/// The version of an object that a conditional replace must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(UpdateVersion);

/// An object's content with its version and age.
pub struct Versioned {
    pub bytes: Bytes,
    pub version: Version,
    pub modified: std::time::SystemTime,
}

/// Reads a whole object; `None` when it does not exist.
pub fn get(r: &Remote) -> Result<Option<Versioned>> {
    let got = block_on(async {
        let result = r.store.get(&r.key).await?;
        let meta = result.meta.clone();
        Ok::<_, object_store::Error>((result.bytes().await?, meta))
    });
    match got {
        Ok((bytes, meta)) => Ok(Some(Versioned {
            bytes,
            version: Version(UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            }),
            modified: meta.last_modified.into(),
        })),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(r.error(e)),
    }
}

/// Writes a whole object (atomic: readers see the old object or the new one).
pub fn put(r: &Remote, bytes: Vec<u8>) -> Result<()> {
    block_on(r.store.put(&r.key, PutPayload::from(bytes)))
        .map(|_| ())
        .map_err(|e| r.error(e))
}

/// Creates the object only if absent (a conditional write): `Ok(false)` when it exists.
pub fn create(r: &Remote, bytes: Vec<u8>) -> Result<bool> {
    let opts = PutOptions::from(PutMode::Create);
    match block_on(r.store.put_opts(&r.key, PutPayload::from(bytes), opts)) {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(r.error(e)),
    }
}

/// Replaces the object only if it is still at `version`: the new version, or `None` when it
/// changed meanwhile (or is gone).
pub fn replace(r: &Remote, bytes: Vec<u8>, version: &Version) -> Result<Option<Version>> {
    let opts = PutOptions::from(PutMode::Update(version.0.clone()));
    match block_on(r.store.put_opts(&r.key, PutPayload::from(bytes), opts)) {
        Ok(done) => Ok(Some(Version(UpdateVersion {
            e_tag: done.e_tag,
            version: done.version,
        }))),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            Ok(None)
        }
        Err(e) => Err(r.error(e)),
    }
}

/// Deletes the object; `Ok(false)` when there was none.
pub fn delete(r: &Remote) -> Result<bool> {
    // S3 answers a delete of a missing key with success: ask first, for the answer's sake.
    match block_on(r.store.head(&r.key)) {
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(r.error(e)),
        Ok(_) => {}
    }
    match block_on(r.store.delete(&r.key)) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
        Err(e) => Err(r.error(e)),
    }
}

/// Deletes every object below the prefix (a "directory").
pub fn delete_all(r: &Remote) -> Result<()> {
    let keys = list_all(r)?;
    for k in keys {
        match block_on(r.store.delete(&k.location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(r.error(e)),
        }
    }
    Ok(())
}

/// Every object below the prefix, at any depth.
pub fn list_all(r: &Remote) -> Result<Vec<object_store::ObjectMeta>> {
    block_on(r.store.list(Some(&r.key)).try_collect::<Vec<_>>()).map_err(|e| r.error(e))
}

/// Names of the objects directly below the prefix (a directory's files), sorted.
pub fn list_names(r: &Remote) -> Result<Vec<String>> {
    let listed = block_on(r.store.list_with_delimiter(Some(&r.key))).map_err(|e| r.error(e))?;
    let mut names: Vec<String> = listed
        .objects
        .into_iter()
        .filter_map(|o| o.location.filename().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Copies an object within its store.
pub fn copy(from: &Remote, to: &Remote) -> Result<()> {
    block_on(from.store.copy(&from.key, &to.key)).map_err(|e| from.error(e))
}

/// Checks that the location's bucket exists and can be listed with the credentials in effect
/// (one request): a missing bucket or refused credentials are reported before any work.
pub fn probe(path: &Path) -> Result<()> {
    if let Some(r) = Location::remote(path)? {
        block_on(r.store.list_with_delimiter(Some(&r.key))).map_err(|e| r.error(e))?;
    }
    Ok(())
}

// The file-system twins: one call for either kind of location.

/// Reads a whole file or object; `None` when it does not exist.
pub fn read_bytes(path: &Path) -> Result<Option<Bytes>> {
    match Location::of(path)? {
        Location::Remote(r) => Ok(get(&r)?.map(|v| v.bytes)),
        Location::Local(p) => match std::fs::read(&p) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        },
    }
}

/// Reads JSON; `None` when the file or object does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match read_bytes(path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
    }
}

/// Replaces a file (durably: temp, fsync, rename) or an object with `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    match Location::of(path)? {
        Location::Remote(r) => put(&r, crate::durable::to_json(value, path)?),
        Location::Local(p) => crate::durable::write_json_atomic(&p, value),
    }
}

/// Whether a file or object exists.
pub fn is_file(path: &Path) -> Result<bool> {
    match Location::of(path)? {
        Location::Local(p) => Ok(p.is_file()),
        Location::Remote(r) => match block_on(r.store.head(&r.key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(r.error(e)),
        },
    }
}

/// Removes a file or object; `Ok(false)` when there was none.
pub fn remove_file(path: &Path) -> Result<bool> {
    match Location::of(path)? {
        Location::Remote(r) => delete(&r),
        Location::Local(p) => match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&p, e)),
        },
    }
}

/// Removes a directory and everything below it (every object below the prefix).
pub fn remove_dir(path: &Path) -> Result<()> {
    match Location::of(path)? {
        Location::Remote(r) => delete_all(&r),
        Location::Local(p) => match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        },
    }
}

/// Creates a directory and its parents (nothing to do on an object store).
pub fn create_dir_all(path: &Path) -> Result<()> {
    match is_url(path) {
        true => Ok(()),
        false => std::fs::create_dir_all(path).map_err(|e| Error::io(path, e)),
    }
}

/// Makes the directory's renames durable (an object store's writes are durable when done).
pub fn sync_dir(path: &Path) -> Result<()> {
    match is_url(path) {
        true => Ok(()),
        false => crate::durable::sync_dir(path),
    }
}

/// Names of the files in a directory (objects directly below a prefix), sorted; empty when it
/// does not exist.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    match Location::of(dir)? {
        Location::Remote(r) => list_names(&r),
        Location::Local(p) => {
            let entries = match std::fs::read_dir(&p) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(Error::io(&p, e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&p, e))?;
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            Ok(names)
        }
    }
}

/// Creates a file or object holding `bytes` only if there is none (a hard link from a synced
/// temporary file; a conditional write): `Ok(false)` when one exists, whoever wrote it.
pub fn create_new(path: &Path, bytes: Vec<u8>) -> Result<bool> {
    let p = match Location::of(path)? {
        Location::Remote(r) => return create(&r, bytes),
        Location::Local(p) => p,
    };
    let tmp = crate::durable::temp_path(&p);
    crate::durable::write_synced(&tmp, &bytes)?;
    let linked = std::fs::hard_link(&tmp, &p);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => crate::durable::sync_dir(p.parent().unwrap_or(Path::new("."))).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Whether a file or directory exists (anything below the prefix, on an object store).
pub fn exists(path: &Path) -> Result<bool> {
    match Location::of(path)? {
        Location::Local(p) => Ok(p.exists()),
        Location::Remote(r) => {
            let first = block_on(async { r.store.list(Some(&r.key)).try_next().await });
            Ok(first.map_err(|e| r.error(e))?.is_some())
        }
    }
}
