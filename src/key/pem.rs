//! PEM armour for RSA private keys: PKCS#1 (`RSA PRIVATE KEY`) and PKCS#8 (`PRIVATE KEY`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::der;
use crate::error::{Error, ErrorKind, Result};

/// A private key in PKCS#1 `RSAPrivateKey` DER, wiped on drop.
pub(crate) type Pkcs1Der = Zeroizing<Vec<u8>>;

/// Decodes a PEM private key into PKCS#1 DER.
///
/// Errors say what was found (encrypted key, other algorithm, public key, no PEM at
/// all) and never echo the input.
pub(crate) fn decode_private_key(pem: &str) -> Result<Pkcs1Der> {
    let begin = pem
        .find("-----BEGIN ")
        .ok_or_else(|| Error::new(ErrorKind::MalformedKey, "no pem 'begin' line in key"))?;
    let after_begin = pem.get(begin + "-----BEGIN ".len()..).unwrap_or_default();
    let label_end = after_begin
        .find("-----")
        .ok_or_else(|| Error::new(ErrorKind::MalformedKey, "unterminated pem 'begin' line"))?;
    let label = after_begin.get(..label_end).unwrap_or_default();
    let body_and_rest = after_begin.get(label_end + 5..).unwrap_or_default();
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_rest.find(&end_marker).ok_or_else(|| {
        Error::new(
            ErrorKind::MalformedKey,
            "pem 'end' line missing or mismatched",
        )
    })?;
    let body = body_and_rest.get(..body_end).unwrap_or_default();

    match label {
        "RSA PRIVATE KEY" | "PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => {
            return Err(Error::new(
                ErrorKind::EncryptedKey,
                "key is an encrypted pkcs#8 key; decrypt it first",
            ));
        }
        "EC PRIVATE KEY" | "DSA PRIVATE KEY" | "OPENSSH PRIVATE KEY" => {
            return Err(Error::new(
                ErrorKind::UnsupportedKey,
                "key is not an rsa private key in pkcs#1 or pkcs#8 form",
            ));
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {
            return Err(Error::new(
                ErrorKind::MalformedKey,
                "expected a private key, found a public key or certificate",
            ));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::MalformedKey,
                "unrecognised pem label in key",
            ));
        }
    }

    // RFC 1421 headers: `Proc-Type: 4,ENCRYPTED` marks an OpenSSL-encrypted PKCS#1 key.
    let mut b64 = Zeroizing::new(String::with_capacity(body.len()));
    for line in body.lines() {
        let line = line.trim();
        if line.contains(':') {
            if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                return Err(Error::new(
                    ErrorKind::EncryptedKey,
                    "key is an encrypted pkcs#1 key; decrypt it first",
                ));
            }
            continue;
        }
        b64.push_str(line);
    }
    let der = Zeroizing::new(
        STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| Error::new(ErrorKind::MalformedKey, "pem body is not valid base64"))?,
    );
    if label == "PRIVATE KEY" {
        Ok(Zeroizing::new(der::pkcs1_of_pkcs8(&der)?.to_vec()))
    } else {
        Ok(der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed() {
        for input in [
            "",
            "hello",
            "-----BEGIN RSA PRIVATE KEY-----\n!!\n-----END RSA PRIVATE KEY-----",
        ] {
            let err = decode_private_key(input).err().map(|e| e.kind());
            assert_eq!(err, Some(ErrorKind::MalformedKey), "{input:?}");
        }
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        for pem in [pkcs8, pkcs1] {
            let err = decode_private_key(pem).err().map(|e| e.kind());
            assert_eq!(err, Some(ErrorKind::EncryptedKey));
        }
    }

    #[test]
    fn ec_keys_are_unsupported() {
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        let err = decode_private_key(pem).err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::UnsupportedKey));
    }
}
