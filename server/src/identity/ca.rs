//! The certificate authority: creates itself, and signs the server's
//! certificate and agents' certificate signing requests.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::{sha256_hex, IdentityError};
use crate::store::StoredCa;

const CA_YEARS: i64 = 20;
/// Agents keep their certificate this long; revocation, not expiry, is how
/// an agent is cut off.
const AGENT_YEARS: i64 = 10;
/// The server makes a new certificate at every start.
const SERVER_DAYS: i64 = 397;

/// The fleet's CA, loaded.
pub struct Authority {
    cert_pem: String,
    fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate just signed.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    /// SHA-256 of the DER certificate, hex: how the server recognises it.
    pub sha256: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    // Positive, as DER integers in certificates must be.
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn validity(params: &mut CertificateParams, life: Duration) {
    let now = OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + life;
}

/// A host name: dot-separated labels of letters, digits and '-'.
fn is_dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Authority {
    /// A new CA: a P-256 key and a self-signed certificate.
    pub fn generate() -> Result<StoredCa, IdentityError> {
        let key = KeyPair::generate().map_err(IdentityError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "fleetban");
        dn.push(DnType::CommonName, "fleetban CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial());
        validity(&mut params, Duration::days(365 * CA_YEARS));
        let cert = params.self_signed(&key).map_err(IdentityError::Generate)?;
        Ok(StoredCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn load(ca: &StoredCa) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(&ca.key_pem)
            .map_err(|e| IdentityError::BadCa(format!("private key: {e}")))?;
        let der = pem::parse(&ca.cert_pem)
            .map_err(|e| IdentityError::BadCa(format!("certificate: {e}")))?;
        if der.tag() != "CERTIFICATE" {
            return Err(IdentityError::BadCa(format!(
                "expected a CERTIFICATE, found {}",
                der.tag()
            )));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents())
            .map_err(|e| IdentityError::BadCa(format!("certificate: {e}")))?;
        if !cert.is_ca() {
            return Err(IdentityError::BadCa(
                "the certificate is not a CA certificate (basicConstraints CA:TRUE)".into(),
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(IdentityError::BadCa(
                "the private key does not belong to the certificate".into(),
            ));
        }
        let fingerprint = sha256_hex(der.contents());
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key)
            .map_err(|e| IdentityError::BadCa(format!("certificate: {e}")))?;
        Ok(Authority {
            cert_pem: ca.cert_pem.clone(),
            fingerprint,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what agents pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A server certificate for `names` (host names or IP addresses) with a
    /// new key: `(chain PEM: the certificate then the CA, key PEM)`. The CA
    /// goes with the chain so an agent can pin it on first contact. Names
    /// that are neither are skipped (and returned).
    pub fn server_certificate(
        &self,
        names: &[String],
    ) -> Result<(String, String, Vec<String>), IdentityError> {
        let key = KeyPair::generate().map_err(IdentityError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "fleetban");
        dn.push(DnType::CommonName, "fleetban server");
        params.distinguished_name = dn;
        let mut skipped = Vec::new();
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                Err(_) if is_dns_name(n) => n.clone().try_into().ok().map(SanType::DnsName),
                Err(_) => None,
            };
            match san {
                Some(s) if !params.subject_alt_names.contains(&s) => {
                    params.subject_alt_names.push(s)
                }
                Some(_) => {}
                None => skipped.push(n.clone()),
            }
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        validity(&mut params, Duration::days(SERVER_DAYS));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(IdentityError::Generate)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
            skipped,
        ))
    }

    /// Signs an agent's CSR: only its public key is taken; the subject is
    /// the agent id, the only use client authentication.
    pub fn sign_agent(
        &self,
        agent_id: &str,
        csr_pem: &str,
    ) -> Result<IssuedCertificate, IdentityError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IdentityError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "fleetban agent");
        dn.push(DnType::CommonName, agent_id);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        validity(&mut params, Duration::days(365 * AGENT_YEARS));
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(IdentityError::Generate)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            sha256: sha256_hex(cert.der()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        let key = KeyPair::generate().expect("key");
        CertificateParams::default()
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_ca_survives_storage_and_signs() {
        let stored = Authority::generate().expect("generate");
        let ca = Authority::load(&stored).expect("load");
        assert_eq!(ca.fingerprint().len(), 64);
        let again = Authority::load(&stored).expect("load again");
        assert_eq!(ca.fingerprint(), again.fingerprint());
        let issued = ca.sign_agent("web-1", &csr()).expect("sign");
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let der = pem::parse(&issued.pem).expect("pem");
        assert_eq!(sha256_hex(der.contents()), issued.sha256);
        let (chain, key, skipped) = ca
            .server_certificate(&["localhost".into(), "127.0.0.1".into(), "bad name!".into()])
            .expect("server cert");
        assert_eq!(pem::parse_many(&chain).expect("chain").len(), 2);
        assert!(chain.ends_with(ca.cert_pem()));
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(skipped, vec!["bad name!".to_string()]);
    }

    #[test]
    fn bad_csrs_and_cas_are_refused() {
        let ca = Authority::load(&Authority::generate().expect("ca")).expect("load");
        assert!(matches!(
            ca.sign_agent("a", "not a csr"),
            Err(IdentityError::BadCsr(_))
        ));
        // A CSR whose signature does not match its key.
        let good = csr();
        let mut der = pem::parse(&good).expect("pem").into_contents();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(matches!(
            ca.sign_agent("a", &tampered),
            Err(IdentityError::BadCsr(_))
        ));
        let (one, two) = (
            Authority::generate().expect("ca"),
            Authority::generate().expect("ca"),
        );
        let refused = |ca: StoredCa| match Authority::load(&ca) {
            Err(IdentityError::BadCa(m)) => m,
            other => panic!("expected BadCa, got {other:?}"),
        };
        let m = refused(StoredCa {
            cert_pem: "garbage".into(),
            key_pem: one.key_pem.clone(),
        });
        assert!(m.contains("certificate"), "{m}");
        let m = refused(StoredCa {
            cert_pem: one.cert_pem.clone(),
            key_pem: two.key_pem.clone(),
        });
        assert!(m.contains("does not belong"), "{m}");
        let m = refused(StoredCa {
            cert_pem: one.cert_pem.clone(),
            key_pem: "garbage".into(),
        });
        assert!(m.contains("private key"), "{m}");
        // A leaf certificate is no CA.
        let key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::default()
            .self_signed(&key)
            .expect("leaf");
        let m = refused(StoredCa {
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        });
        assert!(m.contains("not a CA"), "{m}");
    }
}
