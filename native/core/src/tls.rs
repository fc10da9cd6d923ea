//! Seed 002's TLS options mapped onto rustls configurations, for redis,
//! http and the global-distribution transport. rdbms validates its `tls`
//! section here too, but sqlx builds its own from the file paths.

use std::io::BufReader;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::Node;
use crate::error::{Error, Result};
use crate::options::{Field, Opt};
use crate::term::Term;

const VERIFY_MODE: Opt = Opt::one_of("verify_mode", &["peer", "none", "selfsigned_peer"]);
const SNI_PROTOCOL: Opt = Opt::one_of("server_name_indication_protocol", &["default", "https"]);
/// Inside 6.3's `server_name_indication` table.
const SNI_TABLE_PROTOCOL: Opt = Opt::one_of("protocol", &["default", "https"]);
const SNI_TABLE: [Opt; 3] = [Opt::bool("enabled"), Opt::text("host"), SNI_TABLE_PROTOCOL];
const VERSION: Opt = Opt::one_of("versions", &["tlsv1.3", "tlsv1.2", "tlsv1.1", "tlsv1"]);

/// Seed 002's TLS section.
pub const TLS_OPTIONS: [Opt; 12] = [
    Opt::bool("verify_peer"),
    VERIFY_MODE,
    Opt::text("cacertfile"),
    Opt::text("certfile"),
    Opt::text("keyfile"),
    Opt::secret("password"),
    Opt::text("dhfile"),
    Opt::text("ciphers"),
    Opt::shaped("versions", "a list of \"tlsv1.2\", \"tlsv1.3\""),
    Opt::shaped(
        "server_name_indication",
        "a boolean or a table of enabled, host, protocol",
    ),
    Opt::text("server_name_indication_host"),
    SNI_PROTOCOL,
];
/// mod_global_distrib's `connections.tls`, both sides of a mutual TLS link.
pub const MUTUAL_TLS_OPTIONS: [Opt; 4] = [
    Opt::text("certfile"),
    Opt::text("cacertfile"),
    Opt::text("ciphers"),
    Opt::text("dhfile"),
];
/// The `tls` section of a pool's connection.
pub const TLS_SECTION: Opt = Opt::section("tls", &TLS_OPTIONS);

/// Which name the server certificate must carry.
#[derive(Debug, Clone)]
enum NameCheck {
    /// The host of `host` (the default when SNI is on).
    Url,
    /// `server_name_indication_host`.
    Fixed(ServerName<'static>),
    /// `server_name_indication = false`: only the chain is verified.
    None,
}

/// The options of Erlang's ssl client that seed 000's legacy forms carry
/// (rdbms `ssl_opts`, ldap `tls_options`); each reader maps them onto its
/// TLS settings.
pub const SSL_CLIENT_OPTIONS: [&str; 5] = [
    "verify",
    "cacertfile",
    "certfile",
    "keyfile",
    "server_name_indication",
];

/// Seed 000's lists of ssl client options (ldap `tls_options`, cassandra `ssl`, riak
/// `ssl_opts`) in the shared TLS
/// section's names: `{verify, verify_peer | verify_none}`, `cacertfile`,
/// `certfile`, `keyfile`, `server_name_indication` (a host or `disable`).
pub fn ssl_client_options(opts: &Node) -> Result<Term> {
    opts.only_keys(&SSL_CLIENT_OPTIONS)?;
    let mut out = Vec::new();
    if let Some(v) = opts.at("verify").one_of(&["verify_peer", "verify_none"])? {
        out.push(("verify_peer", Term::from(v == "verify_peer")));
    }
    for file in ["cacertfile", "certfile", "keyfile"] {
        if let Some(path) = opts.at(file).string()? {
            out.push((file, Term::from(path)));
        }
    }
    match opts.at("server_name_indication").string()? {
        Some(d) if d == "disable" => out.push(("server_name_indication", Term::from(false))),
        Some(host) => out.push(("server_name_indication_host", Term::from(host))),
        None => {}
    }
    Ok(Term::Map(
        out.into_iter().map(|(k, v)| (Term::atom(k), v)).collect(),
    ))
}

/// Reads the `tls` table (seed 002's TLS section, and the forms of
/// MongooseIM 6.3's maps) into a rustls client configuration:
///
/// - `verify_peer` (default `false`) or `verify_mode` (`"peer"`/`"none"`):
///   verify the server's chain and name. The CA certificates come from
///   `cacertfile`, or from the system's store when it is not set.
///   `verify_mode = "selfsigned_peer"` is refused: rustls cannot honour it.
/// - `certfile` (a certificate chain, and the key unless `keyfile` is set)
///   and `keyfile`: the client certificate. `password` is accepted but
///   encrypted keys are not: decrypt the key.
/// - `server_name_indication` (boolean, or 6.3's `#{enabled, host,
///   protocol}`), `server_name_indication_host`: the name the certificate is
///   checked against (the host of `host` by default); `false` sends no SNI
///   and skips the name check, keeping the chain check. The SNI extension
///   always carries the host of `host` (reqwest takes it from the URL), so
///   `server_name_indication_host` changes the checked name only.
///   `server_name_indication_protocol` is accepted: webpki always matches
///   names the way `"https"` does (wildcards in the leftmost label).
/// - `ciphers`: a `:`-separated list of suite names (OpenSSL or IANA
///   spelling) among those rustls implements; it restricts TLS 1.3 suites too.
///   `TLSv1.2` and `TLSv1.3` stand for every suite of that version, as in
///   OpenSSL; other keywords such as `HIGH` or `!aNULL` are refused.
/// - `versions`: `"tlsv1.2"`, `"tlsv1.3"`; `"tlsv1"` and `"tlsv1.1"` are
///   accepted and ignored (rustls implements neither).
/// - `dhfile` is accepted and has no effect: rustls uses ECDHE only.
pub fn read_tls(tls: &Node) -> Result<ClientConfig> {
    tls.only(&TLS_OPTIONS)?;
    let verify = read_verify(tls)?;
    let name_check = read_name_check(tls)?;
    tls.at("password").secret()?;
    tls.at("dhfile").string()?;

    let base = rustls::crypto::ring::default_provider();
    let cipher_suites = match read_ciphers(&tls.at("ciphers"))? {
        Some(suites) => suites,
        None => base.cipher_suites.clone(),
    };
    let provider = Arc::new(CryptoProvider {
        cipher_suites,
        ..base
    });
    let versions = read_versions(&tls.at("versions"))?;
    let roots = if verify {
        Some(Arc::new(read_roots(&tls.at("cacertfile"))?))
    } else {
        tls.at("cacertfile").string()?;
        None
    };
    let client_auth = read_client_auth(tls)?;

    let verifier = Arc::new(Verifier {
        roots,
        name: name_check.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            Error::Config(format!(
                "{}: the ciphers and versions leave nothing to use: {e}",
                tls.path()
            ))
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_auth {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
            Error::Config(format!(
                "{}: the certificate and key do not make a usable pair: {e}",
                tls.at("certfile").path()
            ))
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.enable_sni = !matches!(name_check, NameCheck::None);
    Ok(config)
}

/// mod_global_distrib's `connections.tls` (`certfile` with the certificate
/// and key, `cacertfile`, `ciphers`, `dhfile`): both sides of a mutual TLS
/// link. Each side presents `certfile` and requires a peer certificate that
/// chains to `cacertfile`; names are not checked, as datacenters dial each
/// other by address. `dhfile` is accepted and has no effect (ECDHE only).
pub fn read_mutual(tls: &Node) -> Result<(rustls::ServerConfig, ClientConfig)> {
    tls.only(&MUTUAL_TLS_OPTIONS)?;
    let certfile = tls.at("certfile");
    let cacertfile = tls.at("cacertfile");
    let cert_path = certfile.required_string()?;
    let ca_path = cacertfile.required_string()?;
    let mut client_opts = vec![
        (Term::atom("verify_peer"), Term::from(true)),
        (Term::atom("server_name_indication"), Term::from(false)),
        (Term::atom("certfile"), Term::from(cert_path)),
        (Term::atom("cacertfile"), Term::from(ca_path)),
    ];
    for key in ["ciphers", "dhfile"] {
        if let Some(v) = tls.at(key).term() {
            client_opts.push((Term::atom(key), v.clone()));
        }
    }
    let client_term = Term::Map(client_opts);
    let mut client = read_tls(&tls.beside(tls.path(), &client_term))?;
    client.alpn_protocols.clear();

    let provider = Arc::new(client.crypto_provider().as_ref().clone());
    let roots = Arc::new(read_roots(&cacertfile)?);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Error::Config(format!("{}: {e}", cacertfile.path())))?;
    let (certs, key) = read_client_auth(tls)?.ok_or_else(|| certfile.missing("a PEM file"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("{}: {e}", tls.path())))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Config(format!(
                "{}: the certificate and key do not make a usable pair: {e}",
                certfile.path()
            ))
        })?;
    Ok((server, client))
}

fn read_verify(tls: &Node) -> Result<bool> {
    let peer = tls.at("verify_peer");
    let mode = tls.at("verify_mode");
    if peer.is_set() && mode.is_set() {
        return Err(Error::Config(format!(
            "{}: set either verify_peer or verify_mode, not both",
            mode.path()
        )));
    }
    match Field::of(mode.clone(), &VERIFY_MODE).one_of()?.as_deref() {
        Some("peer") => Ok(true),
        Some("none") => Ok(false),
        Some(_) => Err(Error::Config(format!(
            "{}: selfsigned_peer is not supported by rustls; use \"peer\" with the \
             server's certificate in cacertfile",
            mode.path()
        ))),
        None => peer.bool_or(false),
    }
}

fn read_name_check(tls: &Node) -> Result<NameCheck> {
    let sni = tls.at("server_name_indication");
    let (enabled, host, protocol) = match sni.term() {
        Some(Term::Map(_)) => {
            sni.only(&SNI_TABLE)?;
            for legacy in [
                "server_name_indication_host",
                "server_name_indication_protocol",
            ] {
                if tls.at(legacy).is_set() {
                    return Err(Error::Config(format!(
                        "{}: already given inside server_name_indication",
                        tls.at(legacy).path()
                    )));
                }
            }
            (
                sni.at(SNI_TABLE[0].name).bool()?,
                sni.at(SNI_TABLE[1].name),
                sni.opt(&SNI_TABLE_PROTOCOL),
            )
        }
        _ => (
            sni.bool()?,
            tls.at("server_name_indication_host"),
            tls.opt(&SNI_PROTOCOL),
        ),
    };
    protocol.one_of()?;
    let name = host.string()?;
    match (enabled, name) {
        (Some(false), Some(_)) => Err(Error::Config(format!(
            "{}: can only be set when server_name_indication is enabled",
            host.path()
        ))),
        (Some(false), None) => Ok(NameCheck::None),
        (_, Some(name)) => ServerName::try_from(name)
            .map(NameCheck::Fixed)
            .map_err(|_| host.invalid("a DNS name or an IP address")),
        (_, None) => Ok(NameCheck::Url),
    }
}

/// OpenSSL's names of the suites rustls implements, with their IANA names.
pub(crate) const OPENSSL_SUITE_NAMES: [(&str, &str); 9] = [
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

pub(crate) fn suite_name(suite: &SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

fn read_ciphers(node: &Node) -> Result<Option<Vec<SupportedCipherSuite>>> {
    let Some(text) = node.string()? else {
        return Ok(None);
    };
    let all = rustls::crypto::ring::ALL_CIPHER_SUITES;
    let mut chosen: Vec<SupportedCipherSuite> = vec![];
    for name in text.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        // OpenSSL's version keywords (MongooseIM's default "TLSv1.2:TLSv1.3"):
        // every suite of that version.
        let version = match name {
            "TLSv1.2" => Some(rustls::ProtocolVersion::TLSv1_2),
            "TLSv1.3" => Some(rustls::ProtocolVersion::TLSv1_3),
            _ => None,
        };
        if let Some(version) = version {
            for suite in all.iter().filter(|s| s.version().version == version) {
                if !chosen.iter().any(|c| c.suite() == suite.suite()) {
                    chosen.push(*suite);
                }
            }
            continue;
        }
        let iana = OPENSSL_SUITE_NAMES
            .iter()
            .find(|(openssl, _)| *openssl == name)
            .map_or(name, |(_, iana)| iana);
        let Some(suite) = all.iter().find(|s| suite_name(s) == iana) else {
            let versions = ["TLSv1.2", "TLSv1.3"].into_iter();
            let known: Vec<_> = versions
                .chain(OPENSSL_SUITE_NAMES.iter().map(|(o, _)| *o))
                .collect();
            return Err(Error::Config(format!(
                "{}: rustls cannot honour the cipher {name:?}; list suites among {}",
                node.path(),
                known.join(", ")
            )));
        };
        if !chosen.iter().any(|c| c.suite() == suite.suite()) {
            chosen.push(*suite);
        }
    }
    if chosen.is_empty() {
        return Err(node.invalid("a non-empty list of cipher suites"));
    }
    Ok(Some(chosen))
}

fn read_versions(node: &Node) -> Result<Vec<&'static SupportedProtocolVersion>> {
    let Some(items) = node.list()? else {
        return Ok(rustls::ALL_VERSIONS.to_vec());
    };
    let mut versions = vec![];
    for item in &items {
        match Field::of(item.clone(), &VERSION).one_of()?.as_deref() {
            Some("tlsv1.3") => versions.push(&rustls::version::TLS13),
            Some("tlsv1.2") => versions.push(&rustls::version::TLS12),
            _ => {}
        }
    }
    if versions.is_empty() {
        return Err(node.invalid("a list holding \"tlsv1.2\" or \"tlsv1.3\""));
    }
    Ok(versions)
}

fn open_pem(node: &Node, file: &str) -> Result<BufReader<std::fs::File>> {
    std::fs::File::open(file)
        .map(BufReader::new)
        .map_err(|e| Error::Config(format!("{}: cannot read {file:?}: {e}", node.path())))
}

fn read_certs(node: &Node, file: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut open_pem(node, file)?)
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Config(format!("{}: bad PEM in {file:?}: {e}", node.path())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no certificate found in {file:?}",
            node.path()
        )));
    }
    Ok(certs)
}

fn read_roots(cacertfile: &Node) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match cacertfile.string()? {
        Some(file) => {
            for cert in read_certs(cacertfile, &file)? {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!(
                        "{}: unusable CA certificate in {file:?}: {e}",
                        cacertfile.path()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "{}: required with peer verification, as no system CA certificates were found",
                    cacertfile.path()
                )));
            }
        }
    }
    Ok(roots)
}

type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_client_auth(tls: &Node) -> Result<Option<ClientAuth>> {
    let certfile = tls.at("certfile");
    let keyfile = tls.at("keyfile");
    // A malformed keyfile is named as such, even without a certfile.
    keyfile.string()?;
    let Some(cert_path) = certfile.string()? else {
        if keyfile.is_set() {
            return Err(certfile.missing("a certificate file to go with keyfile"));
        }
        return Ok(None);
    };
    let certs = read_certs(&certfile, &cert_path)?;
    let (key_node, key_path) = match keyfile.string()? {
        Some(path) => (keyfile, path),
        None => (certfile, cert_path),
    };
    let key = rustls_pemfile::private_key(&mut open_pem(&key_node, &key_path)?)
        .map_err(|e| Error::Config(format!("{}: bad PEM in {key_path:?}: {e}", key_node.path())))?
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: no unencrypted private key found in {key_path:?} \
                 (encrypted keys are not supported)",
                key_node.path()
            ))
        })?;
    Ok(Some((certs, key)))
}

/// webpki's verification, split so that the name checked can differ from
/// the URL's (`server_name_indication_host`) or be skipped, and the whole
/// check can be off (`verify_peer = false`, handshake signatures still checked).
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    name: NameCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match &self.name {
            NameCheck::Url => verify_server_name(&cert, server_name)?,
            NameCheck::Fixed(name) => verify_server_name(&cert, name)?,
            NameCheck::None => {}
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
