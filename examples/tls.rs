//! A pool of TLS connections with custom roots, SNI and a client
//! certificate. Starts its own rustls server on 127.0.0.1 with certificates
//! made on the spot (rcgen), so it runs anywhere:
//!
//! ```text
//! cargo run --example tls --features tls
//! ```

use std::sync::Arc;
use std::time::Duration;

use latchless::Pool;
use latchless::managers::rustls;
use latchless::managers::{TcpManager, TlsManager};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A CA, a server certificate for "localhost", a client certificate.
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let server_key = KeyPair::generate()?;
    let server_cert =
        CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&server_key, &ca)?;
    let client_key = KeyPair::generate()?;
    let client_cert =
        CertificateParams::new(vec!["client".to_owned()])?.signed_by(&client_key, &ca)?;

    // The server: requires a client certificate from the CA, echoes 5-byte messages.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut msg = [0u8; 5];
                while tls.read_exact(&mut msg).await.is_ok() {
                    if tls.write_all(&msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    // The pool.
    let manager = TlsManager::builder(
        TcpManager::new([addr.to_string()]).connect_timeout(Duration::from_secs(2)),
        "localhost", // SNI, and the name the certificate must carry
    )
    .add_root_pem(ca.pem().as_bytes())
    .client_cert_pem(
        client_cert.pem().as_bytes(),
        client_key.serialize_pem().as_bytes(),
    )
    .build()?;
    println!("{manager:?}"); // never shows the private key
    let pool = Pool::builder(manager).max_size(2).build()?;

    for _ in 0..3 {
        let mut conn = pool.get().await?;
        conn.write_all(b"hello").await?;
        let mut echo = [0u8; 5];
        conn.read_exact(&mut echo).await?; // an error here marks the connection broken
        let (_, session) = conn.get_ref().get_ref();
        println!(
            "echo {:?} over {:?}",
            std::str::from_utf8(&echo)?,
            session.protocol_version()
        );
    }
    println!("pool: {:?}", pool.state());
    Ok(())
}
