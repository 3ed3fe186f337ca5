//! `TlsManager` against an in-test tokio-rustls server on 127.0.0.1 with
//! certificates made at test time (rcgen): SNI, custom roots, client
//! certificates, untrusted certificates and wrong names as `Connect`
//! errors, a peer-closed TLS connection seen as broken, `Debug` that
//! never shows the private key, and which handshake errors are permanent
//! (the certificates, the settings) or retried (the transport, through the
//! outage forwarder).
#![cfg(feature = "tls")]

mod forward;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchless::managers::rustls;
use latchless::managers::{TcpManager, TlsConnection, TlsManager};
use latchless::{Manager, Pool, PoolError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_cert: CertificateDer<'static>,
    client_key_pem: String,
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// both signed by the CA.
fn pki() -> Pki {
    pki_with(|_| {})
}

/// [`pki`], with the server certificate's parameters changed by `server`.
fn pki_with(server: impl FnOnce(&mut CertificateParams)) -> Pki {
    // A name of its own, so that another test CA is a stranger (an unknown
    // issuer), not a namesake whose signature fails.
    static CAS: AtomicUsize = AtomicUsize::new(0);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("latchless test CA {}", CAS.fetch_add(1, SeqCst)),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server(&mut server_params);
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client.latchless.test".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        client_cert: client_cert.der().clone(),
        client_key_pem: client_key.serialize_pem(),
    }
}

#[derive(Default)]
struct Seen {
    accepted: usize,
    sni: Vec<Option<String>>,
    client_certs: Vec<Option<CertificateDer<'static>>>,
    handshake_errors: Vec<String>,
}

/// A TLS server: `PING\n` -> `PONG\n`, `CLOSE` -> close_notify and hang up.
async fn server(pki: &Pki, require_client_cert: bool) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    let config = builder
        .with_single_cert(vec![pki.server_cert.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(sock).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        s.lock().unwrap().handshake_errors.push(e.to_string());
                        return;
                    }
                };
                {
                    let session = tls.get_ref().1;
                    let mut seen = s.lock().unwrap();
                    seen.accepted += 1;
                    seen.sni.push(session.server_name().map(str::to_owned));
                    seen.client_certs
                        .push(session.peer_certificates().and_then(|c| c.first().cloned()));
                }
                let mut cmd = [0u8; 5];
                while tls.read_exact(&mut cmd).await.is_ok() {
                    if &cmd != b"PING\n" || tls.write_all(b"PONG\n").await.is_err() {
                        break;
                    }
                }
                let _ = tls.shutdown().await; // close_notify, then FIN
            });
        }
    });
    (addr, seen)
}

async fn ping(conn: &mut TlsConnection) -> io::Result<()> {
    conn.write_all(b"PING\n").await?;
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).await?;
    if &reply == b"PONG\n" {
        Ok(())
    } else {
        Err(io::Error::other("bad reply"))
    }
}

fn tcp(addr: SocketAddr) -> TcpManager {
    TcpManager::new([addr.to_string()]).connect_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn sni_custom_roots_and_reuse() {
    let pki = pki();
    let (addr, seen) = server(&pki, false).await;
    let manager = TlsManager::builder(tcp(addr), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let pool = Pool::builder(manager).max_size(1).build().unwrap();
    for _ in 0..20 {
        let mut conn = pool.get().await.unwrap();
        ping(&mut conn).await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.accepted, 1, "one TLS session served every request");
    assert_eq!(seen.sni, vec![Some("localhost".to_owned())], "SNI sent");
    assert_eq!(seen.client_certs, vec![None]);
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_requires_one() {
    let pki = pki();
    let (addr, seen) = server(&pki, true).await;
    let manager = TlsManager::builder(tcp(addr), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .client_cert_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .build()
        .unwrap();
    let pool = Pool::builder(manager).max_size(1).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().client_certs,
        vec![Some(pki.client_cert.clone())]
    );

    // Without a client certificate the server refuses the session (at the
    // handshake, or, in TLS 1.3, at the first request).
    let anonymous = TlsManager::builder(tcp(addr), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let pool = Pool::builder(anonymous)
        .max_size(1)
        .fail_fast(true)
        .build()
        .unwrap();
    let refused = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let r = ping(&mut conn).await.map_err(|e| e.to_string());
        assert!(r.is_err() == conn.is_marked_broken());
        r
    }
    .await;
    assert!(
        refused.is_err(),
        "the server must refuse a session without a client certificate"
    );
    let start = Instant::now();
    while seen.lock().unwrap().handshake_errors.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.state().size, 0, "the refused connection is not pooled");
}

#[tokio::test]
async fn untrusted_certificate_and_wrong_name_are_connect_errors_within_the_timeout() {
    let pki = pki();
    let (addr, _seen) = server(&pki, false).await;
    let other_ca = self::pki(); // a CA that did not sign the server's certificate
    let cases = [
        (
            "no roots",
            TlsManager::builder(tcp(addr), "localhost").build().unwrap(),
            "UnknownIssuer",
        ),
        (
            "another CA",
            TlsManager::builder(tcp(addr), "localhost")
                .add_root_pem(other_ca.ca_pem.as_bytes())
                .build()
                .unwrap(),
            "certificate",
        ),
        (
            "wrong name",
            TlsManager::builder(tcp(addr), "not-localhost.example")
                .add_root_pem(pki.ca_pem.as_bytes())
                .build()
                .unwrap(),
            "not valid for name",
        ),
    ];
    for (what, manager, needle) in cases {
        let pool = Pool::builder(manager)
            .max_size(2)
            .connect_timeout(Duration::from_secs(2))
            .fail_fast(true)
            .build()
            .unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("tls, {what}: {err} ({elapsed:?})");
        match &err {
            PoolError::Connect(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
                assert!(e.to_string().contains(needle), "{what}: {e}");
            }
            other => panic!("{what}: expected Connect, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "{what}: took {elapsed:?}");
        assert_eq!(pool.state().size, 0, "{what}: a place leaked");
    }
}

/// The user check runs as the pre-ping of an idle TLS connection: one
/// that fails it is replaced before the caller sees it.
#[tokio::test]
async fn a_tls_connection_failing_the_user_check_is_replaced() {
    let pki = pki();
    let (addr, seen) = server(&pki, false).await;
    let checks = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&checks);
    let manager = TlsManager::builder(tcp(addr), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap()
        .with_check(move |_conn| {
            let first = c.fetch_add(1, SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer (test)"))
                } else {
                    Ok(())
                }
            })
        });
    let pool = Pool::builder(manager)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert!(checks.load(SeqCst) >= 1, "the user check ran");
    assert_eq!(
        seen.lock().unwrap().accepted,
        2,
        "the connection that failed it was replaced"
    );
}

#[tokio::test]
async fn a_peer_closed_tls_connection_is_broken_without_a_round_trip() {
    let pki = pki();
    let (addr, seen) = server(&pki, false).await;
    let manager = TlsManager::builder(tcp(addr), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let pool = Pool::builder(manager)
        .max_size(1)
        .check_after_idle(None)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        ping(&mut conn).await.unwrap();
        assert!(
            !pool.manager().is_broken(&mut conn),
            "healthy (session tickets are not unread replies)"
        );
        conn.write_all(b"CLOSE").await.unwrap();
        let start = Instant::now();
        while !pool.manager().is_broken(&mut conn) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "is_broken never saw the close"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(pool.state().size, 0, "closed on return, not pooled");
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(seen.lock().unwrap().accepted, 2);
}

#[test]
fn bad_pem_and_names_are_typed_errors_and_debug_never_shows_the_key() {
    let pki = pki();
    let tcp = || TcpManager::new(["127.0.0.1:1"]);
    let bad = TlsManager::builder(tcp(), "localhost")
        .add_root_pem(b"garbage")
        .build();
    assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let bad = TlsManager::builder(tcp(), "localhost")
        .client_cert_pem(
            pki.client_cert_pem.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        )
        .build();
    assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let bad = TlsManager::builder(tcp(), "not a host name!").build();
    assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);

    let builder = TlsManager::builder(tcp(), "localhost")
        .add_root_pem(pki.ca_pem.as_bytes())
        .client_cert_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        );
    // A line from the middle of the key's base64 body.
    let key_line = pki.client_key_pem.lines().nth(1).unwrap().to_owned();
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains(&key_line) && !shown.contains("PRIVATE"),
        "{shown}"
    );
    let manager = builder.build().unwrap();
    let shown = format!("{manager:?} {manager:#?}");
    assert!(
        !shown.contains(&key_line) && !shown.contains("PRIVATE"),
        "{shown}"
    );
    assert!(shown.contains("localhost"));
}

// ---- Permanent connect errors: certificates and settings, not transport. ----

#[tokio::test]
async fn rejected_certificates_are_permanent_and_fail_at_once_with_default_settings() {
    let pki = pki();
    let (addr, _seen) = server(&pki, false).await;
    let other_ca = self::pki();
    let expired = pki_with(|params| {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let (expired_addr, _) = server(&expired, false).await;
    let cases = [
        (
            "not signed by a trusted root",
            TlsManager::builder(tcp(addr), "localhost")
                .add_root_pem(other_ca.ca_pem.as_bytes())
                .build()
                .unwrap(),
            "UnknownIssuer",
        ),
        (
            "name mismatch",
            TlsManager::builder(tcp(addr), "not-localhost.example")
                .add_root_pem(pki.ca_pem.as_bytes())
                .build()
                .unwrap(),
            "not valid for name",
        ),
        (
            "expired",
            TlsManager::builder(tcp(expired_addr), "localhost")
                .add_root_pem(expired.ca_pem.as_bytes())
                .build()
                .unwrap(),
            "expired",
        ),
    ];
    for (what, manager, needle) in cases {
        // Default settings (a 30 s acquire timeout, retries with backoff)
        // but for the breaker, which the first permanent error would open
        // (then `warm_up` would fail with `Unavailable`, as
        // tests/outages.rs shows): here each call meets the error itself.
        let pool = Pool::builder(manager).breaker(None).build().unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("tls, {what}: {err} ({elapsed:?})");
        match &err {
            PoolError::Connect(e) => {
                assert!(pool.manager().is_permanent(e), "{what}: {e}");
                assert!(e.to_string().contains(needle), "{what}: {e}");
            }
            other => panic!("{what}: expected Connect, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
        let start = Instant::now();
        let warm = pool.warm_up().await;
        assert!(
            matches!(warm, Err(PoolError::Connect(_))),
            "{what}: {warm:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: warm_up took {:?}",
            start.elapsed()
        );
        assert_eq!(pool.state().size, 0, "{what}: a place leaked");
        let metrics = pool.metrics();
        assert_eq!(metrics.permanent_errors, 2, "{what}: {metrics:?}");
        assert_eq!(metrics.connect_errors, 2, "{what}: not retried");
    }
}

#[tokio::test]
async fn a_client_certificate_the_server_rejects_in_the_handshake_is_permanent() {
    // TLS 1.2: the server's verdict on the client certificate arrives
    // during the handshake (in TLS 1.3 only at the first read).
    let pki = pki();
    let (addr, seen) = server(&pki, true).await;
    let stranger = self::pki(); // a client certificate from another CA
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(stranger.client_key_pem.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![stranger.client_cert.clone()], key)
        .unwrap();
    let manager = TlsManager::new(tcp(addr), "localhost", Arc::new(config)).unwrap();
    let pool = Pool::builder(manager).build().unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    println!("tls 1.2, client certificate rejected: {err} ({elapsed:?})");
    match &err {
        PoolError::Connect(e) => assert!(e.to_string().contains("UnknownCA"), "{e}"),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(pool.metrics().permanent_errors, 1);
    assert_eq!(
        seen.lock().unwrap().handshake_errors.len(),
        1,
        "one attempt"
    );
}

#[tokio::test]
async fn a_refused_tls_port_is_retried_and_a_get_succeeds_once_it_listens_again() {
    let pki = pki();
    let (addr, seen) = server(&pki, false).await;
    let fwd = forward::Forwarder::start(addr);
    fwd.set_mode(forward::Mode::Refuse);
    let manager = || {
        TlsManager::builder(tcp(fwd.addr()), "localhost")
            .add_root_pem(pki.ca_pem.as_bytes())
            .build()
            .unwrap()
    };

    // Refused: retried until the deadline, then the last error.
    let pool = Pool::builder(manager())
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        PoolError::Connect(e) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
            assert!(!pool.manager().is_permanent(e));
        }
        other => panic!("expected Connect(refused), got {other:?}"),
    }
    // Backoff pauses of 12-25, 25-50, 50-100, 100-200 ms: retries stop
    // when the next pause would pass the deadline, after 100 ms at least.
    assert!(
        elapsed >= Duration::from_millis(100),
        "not retried: {elapsed:?}"
    );
    assert!(pool.metrics().connect_errors >= 3);
    assert_eq!(pool.metrics().permanent_errors, 0);
    // Five failures in a row may have opened this pool's breaker, whose
    // probes would connect once the port listens again: closed, it
    // probes no more, and the count below is the next pool's alone.
    pool.close().await;
    drop(pool);

    // With default settings, a get that starts while the port refuses
    // ends with a connection once it listens again.
    let pool = Pool::builder(manager()).build().unwrap();
    let get = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            ping(&mut conn).await.map_err(|e| e.to_string())
        }
    });
    let start = Instant::now();
    while pool.metrics().connect_errors == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no connect tried"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fwd.set_mode(forward::Mode::Forward);
    tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("the get ended")
        .unwrap()
        .unwrap();
    assert_eq!(seen.lock().unwrap().accepted, 1);
    assert_eq!(pool.metrics().permanent_errors, 0);
}

#[test]
fn is_permanent_judges_rustls_errors_as_tokio_rustls_reports_them() {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let manager = TlsManager::builder(TcpManager::new(["127.0.0.1:1"]), "localhost")
        .build()
        .unwrap();
    // tokio-rustls wraps a rustls error in an `InvalidData` io::Error.
    let tls = |e: E| io::Error::new(io::ErrorKind::InvalidData, e);
    let permanent = [
        E::InvalidCertificate(C::UnknownIssuer),
        E::InvalidCertificate(C::NotValidForName),
        E::InvalidCertificate(C::Expired),
        E::InvalidCertificate(C::NotValidYet),
        E::InvalidCertificate(C::Revoked),
        E::InvalidCertificate(C::BadSignature),
        E::InvalidCertificate(C::BadEncoding),
        E::InvalidCertificate(C::ApplicationVerificationFailure),
        E::NoCertificatesPresented,
        E::UnsupportedNameType,
        E::NoApplicationProtocol,
        E::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
        E::AlertReceived(A::BadCertificate),
        E::AlertReceived(A::UnknownCA),
        E::AlertReceived(A::CertificateExpired),
        E::AlertReceived(A::CertificateRequired),
        E::AlertReceived(A::AccessDenied),
        E::AlertReceived(A::ProtocolVersion),
        E::AlertReceived(A::UnrecognisedName),
        E::AlertReceived(A::DecryptError),
    ];
    for e in permanent {
        let shown = format!("{e:?}");
        assert!(manager.is_permanent(&tls(e)), "{shown} must be permanent");
    }
    let transient = [
        E::AlertReceived(A::HandshakeFailure),
        E::AlertReceived(A::InternalError),
        E::AlertReceived(A::CloseNotify),
        E::AlertReceived(A::BadRecordMac),
        E::DecryptError,
        E::PeerMisbehaved(rustls::PeerMisbehaved::BadCertChainExtensions),
        E::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge),
        E::HandshakeNotComplete,
        E::General("anything".to_owned()),
    ];
    for e in transient {
        let shown = format!("{e:?}");
        assert!(!manager.is_permanent(&tls(e)), "{shown} must be retried");
    }
    for kind in [
        io::ErrorKind::ConnectionRefused,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::TimedOut,
        io::ErrorKind::UnexpectedEof,
        io::ErrorKind::InvalidData,
    ] {
        assert!(!manager.is_permanent(&kind.into()), "{kind:?}");
        assert!(!manager.is_permanent(&io::Error::new(kind, "no payload")));
    }
    // The TCP manager's own permanent error passes through.
    let empty = TlsManager::builder(TcpManager::new(Vec::<String>::new()), "localhost")
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(empty.connect()).unwrap_err();
    assert!(empty.is_permanent(&err), "{err}");
}
