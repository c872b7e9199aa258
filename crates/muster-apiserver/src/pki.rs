//! The cluster's trust material, generated once per data dir: a CA, a server certificate signed
//! by it, a bearer token, and the kubeconfig that ties them together.
//!
//! The CA key and certificate and the token are persisted (so clients keep working across
//! restarts); the server certificate is re-issued at every start because its SANs depend on the
//! listen address, which may change between runs.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The ClusterIP of the `kubernetes` Service; pods reach the API under it, so the server
/// certificate must name it.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

pub struct Pki {
    pub ca_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub token: String,
}

fn ca_params() -> CertificateParams {
    // Built identically on every start: the issuer's distinguished name must match the subject
    // of the persisted CA certificate.
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "muster-ca");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Loads or creates the CA and token under `dir/pki`, and issues a fresh server certificate for
/// `listen`.
pub fn load_or_create(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Pki> {
    let pki_dir = data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let ca_key_path = pki_dir.join("ca.key");
    let ca_crt_path = pki_dir.join("ca.crt");
    let (ca_key, ca_pem) = if ca_key_path.exists() && ca_crt_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
            .context("parsing pki/ca.key")?;
        (key, std::fs::read_to_string(&ca_crt_path)?)
    } else {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params().self_signed(&key).context("signing the CA")?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_private(&ca_crt_path, cert.pem().as_bytes())?;
        (key, cert.pem())
    };
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut sans: Vec<SanType> = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes".try_into()?),
        SanType::DnsName("kubernetes.default".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
        SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
    ];
    if let Some(host) = host_name()
        && let Ok(name) = host.as_str().try_into()
    {
        sans.push(SanType::DnsName(name));
    }
    if !listen.ip().is_unspecified() {
        let ip = SanType::IpAddress(listen.ip());
        if !sans.contains(&ip) {
            sans.push(ip);
        }
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params
        .distinguished_name
        .push(DnType::CommonName, "muster-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("parsing pki/ca.crt: {e:?}"))?;

    let token_path = pki_dir.join("token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let bytes: [u8; 32] = rand::random();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&token_path, token.as_bytes())?;
            token
        }
    };

    Ok(Pki {
        ca_pem,
        server_chain: vec![server_cert.der().clone(), ca_der],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        token,
    })
}

/// The address clients should dial: the listen address, with an unspecified IP replaced by
/// loopback.
pub fn client_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// Writes `DIR/kubeconfig` (mode 0600) for `server` and returns its path.
pub fn write_kubeconfig(data_dir: &Path, server: SocketAddr, pki: &Pki) -> anyhow::Result<PathBuf> {
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem.as_bytes());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "muster", "cluster": {
            "server": format!("https://{server}"),
            "certificate-authority-data": ca_b64,
        }}],
        "users": [{"name": "muster-admin", "user": {"token": pki.token}}],
        "contexts": [{"name": "muster", "context": {"cluster": "muster", "user": "muster-admin"}}],
        "current-context": "muster",
        "preferences": {},
    });
    let yaml = serde_yaml::to_string(&config)?;
    let path = data_dir.join("kubeconfig");
    write_private(&path, yaml.as_bytes())?;
    Ok(path)
}
