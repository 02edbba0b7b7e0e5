//! [`TlsFront`]: HTTPS on 127.0.0.1 for a plain server the test runs. TLS is terminated with a
//! self-signed certificate for one name (made by `openssl`) and the bytes go on to the backend,
//! so a test can clone over `https://` through kiln's egress proxy — a CONNECT tunnel the proxy
//! cannot read — from its own git server.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;

/// A running TLS front; dropping it stops it.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    cert_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Serves TLS for `name` on a loopback port, passing each connection's plaintext to
    /// `backend`.
    pub async fn start(name: &str, backend: SocketAddr) -> TlsFront {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("running openssl");
        assert!(
            made.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let cert_pem = std::fs::read_to_string(&cert).expect("the certificate");
        let certs = CertificateDer::pem_file_iter(&cert)
            .expect("the certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("the certificate parses");
        let key = PrivateKeyDer::from_pem_file(&key).expect("the key parses");
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the certificate and key match");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the TLS front");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            addr,
            cert_pem,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate a client must trust (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
