//! Object-store servers for the tests, each an emulator that installs from the registries
//! (`scripts/bootstrap.sh`) and is started here on 127.0.0.1 at a free port, stopped when
//! dropped: moto (S3) and Azurite (Azure Blob). GCS has none that works here: fake-gcs-server is
//! a Go program from GitHub releases and container images, which this project cannot fetch, and
//! the one on PyPI (gcp-storage-emulator) answers reads without the ETag `object_store` requires.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jerex::store;
use jerex::testing as kit;
use object_store::ObjectStore;

/// The bucket (container) every test uses.
pub const BUCKET: &str = "kbase";

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    S3,
    Azure,
}

impl Provider {
    /// The URL scheme jerex reads for it.
    pub fn scheme(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Azure => "az",
        }
    }

    /// The emulator's program, as bootstrap installs it.
    fn program(self) -> PathBuf {
        kit::repo_root().join(match self {
            Provider::S3 => ".venv/bin/moto_server",
            Provider::Azure => ".venv/services/node_modules/.bin/azurite-blob",
        })
    }
}

/// An emulator on a free local port, stopped when dropped.
pub struct Server {
    pub provider: Provider,
    child: Child,
    pub endpoint: String,
}

impl Server {
    /// Starts the emulator (`env`: extra variables, e.g. to make moto refuse every credential);
    /// `None` (skip) when it is not installed, outside CI.
    pub fn start(provider: Provider, env: &[(&str, &str)]) -> Option<Server> {
        let bin = provider.program();
        if !bin.is_file() {
            assert!(
                !kit::under_ci(),
                "CI needs {} (scripts/bootstrap.sh installs it)",
                bin.display()
            );
            eprintln!("skipping: no {}", bin.display());
            return None;
        }
        // One start at a time: a port picked free must not be taken by another test's server
        // before this one binds it.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let port = free_port();
        let mut command = Command::new(&bin);
        let p = port.to_string();
        match provider {
            Provider::S3 => command.args(["-H", "127.0.0.1", "-p", &p]),
            Provider::Azure => command
                .args(["--blobHost", "127.0.0.1", "--blobPort", &p, "--silent"])
                .args(["--skipApiVersionCheck", "--inMemoryPersistence"]),
        };
        let child = command
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server {
            provider,
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{provider:?} emulator did not start"
            );
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "{provider:?} emulator exited"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// `scheme://BUCKET/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{BUCKET}/{}",
            self.provider.scheme(),
            path.trim_start_matches('/')
        )
    }

    /// Creates a bucket (a container on Azure).
    pub fn create_bucket(&self, name: &str) {
        let python = kit::repo_root().join(".venv/bin/python");
        let script = match self.provider {
            // moto takes an unsigned request.
            Provider::S3 => format!(
                "import urllib.request as u; u.urlopen(u.Request('{}/{name}', method='PUT'))",
                self.endpoint
            ),
            Provider::Azure => format!(
                "from azure.storage.blob import BlobServiceClient as C\n\
                 C.from_connection_string('DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};\
                 AccountKey={AZURITE_KEY};BlobEndpoint={}/{AZURITE_ACCOUNT};').create_container('{name}')",
                self.endpoint
            ),
        };
        let o = Command::new(python).arg("-c").arg(script).output().unwrap();
        assert!(
            o.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The credentials and endpoint a jerex process gets from its environment, as a user of
    /// the provider would set them.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.provider {
            Provider::S3 => vec![
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ],
            Provider::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
            ],
        }
    }

    /// `scheme://BUCKET/...` on this server, for the test's own reads and writes (not through
    /// [`store::configure`] or the environment, which are process-wide while tests run side
    /// by side).
    pub fn remote(&self, url: &str) -> store::Remote {
        let root = self.url("");
        let root = root.trim_end_matches('/');
        let key = url
            .strip_prefix(root)
            .unwrap_or_else(|| panic!("{url} is not in {root}"));
        let store: Arc<dyn ObjectStore> = match self.provider {
            Provider::S3 => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(&self.endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(BUCKET)
                    .with_access_key_id("test")
                    .with_secret_access_key("test")
                    .with_region("us-east-1")
                    .build()
                    .unwrap(),
            ),
            Provider::Azure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::new()
                    .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", self.endpoint))
                    .with_allow_http(true)
                    .with_account(AZURITE_ACCOUNT)
                    .with_access_key(AZURITE_KEY)
                    .with_container_name(BUCKET)
                    .build()
                    .unwrap(),
            ),
        };
        store::Remote {
            store,
            key: object_store::path::Path::from(key.trim_matches('/')),
            url: url.to_string(),
            root: root.to_string(),
        }
    }

    /// Copies every object below `url` into `dir` (the same relative names).
    pub fn download(&self, url: &str, dir: &Path) {
        let r = self.remote(url);
        for meta in store::list_all(&r).unwrap() {
            let key = meta.location.as_ref();
            let rel = key
                .strip_prefix(r.key.as_ref())
                .unwrap()
                .trim_start_matches('/');
            let target = dir.join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let object = self.remote(&format!("{}/{key}", r.root));
            let bytes = store::get(&object).unwrap().unwrap().bytes;
            std::fs::write(target, bytes).unwrap();
        }
    }

    /// The names of the objects directly below `url`.
    pub fn names(&self, url: &str) -> Vec<String> {
        store::list_names(&self.remote(url)).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
