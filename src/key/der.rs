//! The few DER structures an RSA key needs: PKCS#1, PKCS#8 and SubjectPublicKeyInfo.
//!
//! Only definite-length encodings are read; anything unexpected is an error, never a
//! panic.

use crate::error::{Error, ErrorKind, Result};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

/// 1.2.840.113549.1.1.1 (rsaEncryption), content bytes only.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

fn malformed(what: &'static str) -> Error {
    Error::new(ErrorKind::MalformedKey, what)
}

/// Reads one TLV from the front of `input`: (tag, content, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (len_bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8])> {
    match read_tlv(input) {
        Some((t, content, rest)) if t == tag => Ok((content, rest)),
        _ => Err(malformed(what)),
    }
}

/// An unsigned big-endian integer without leading zero bytes.
fn unsigned(int: &[u8]) -> &[u8] {
    let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
    int.get(start..).unwrap_or_default()
}

/// The modulus and public exponent of an RSA key, big-endian, no leading zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RsaPublicParts {
    pub(crate) n: Vec<u8>,
    pub(crate) e: Vec<u8>,
}

impl RsaPublicParts {
    /// Size of the modulus in bits.
    pub(crate) fn bits(&self) -> usize {
        match self.n.first() {
            Some(&top) => self.n.len() * 8 - top.leading_zeros() as usize,
            None => 0,
        }
    }

    /// DER `RSAPublicKey` (PKCS#1).
    pub(crate) fn to_pkcs1(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.n.len() + self.e.len() + 16);
        write_uint(&mut body, &self.n);
        write_uint(&mut body, &self.e);
        let mut out = Vec::with_capacity(body.len() + 4);
        write_tlv(&mut out, SEQUENCE, &body);
        out
    }

    /// DER `SubjectPublicKeyInfo` with the rsaEncryption algorithm.
    pub(crate) fn to_spki(&self) -> Vec<u8> {
        let pkcs1 = self.to_pkcs1();
        let mut alg = Vec::with_capacity(16);
        write_tlv(&mut alg, OID, RSA_ENCRYPTION);
        write_tlv(&mut alg, NULL, &[]);
        let mut bits = Vec::with_capacity(pkcs1.len() + 1);
        bits.push(0);
        bits.extend_from_slice(&pkcs1);
        let mut body = Vec::with_capacity(pkcs1.len() + 32);
        write_tlv(&mut body, SEQUENCE, &alg);
        write_tlv(&mut body, BIT_STRING, &bits);
        let mut out = Vec::with_capacity(body.len() + 4);
        write_tlv(&mut out, SEQUENCE, &body);
        out
    }

    /// Parses a DER `RSAPublicKey` (PKCS#1).
    pub(crate) fn from_pkcs1(der: &[u8]) -> Result<Self> {
        let (seq, rest) = expect(der, SEQUENCE, "rsa public key is not a der sequence")?;
        if !rest.is_empty() {
            return Err(malformed("trailing data after rsa public key"));
        }
        let (n, seq) = expect(seq, INTEGER, "rsa public key has no modulus")?;
        let (e, _) = expect(seq, INTEGER, "rsa public key has no exponent")?;
        Self::from_ints(n, e)
    }

    /// Parses a DER `SubjectPublicKeyInfo` holding an RSA key.
    pub(crate) fn from_spki(der: &[u8]) -> Result<Self> {
        let (seq, rest) = expect(der, SEQUENCE, "public key is not a der sequence")?;
        if !rest.is_empty() {
            return Err(malformed("trailing data after public key"));
        }
        let (alg, seq) = expect(seq, SEQUENCE, "public key has no algorithm")?;
        let (oid, _) = expect(alg, OID, "public key algorithm has no oid")?;
        if oid != RSA_ENCRYPTION {
            return Err(Error::new(
                ErrorKind::UnsupportedKey,
                "public key is not an rsa key",
            ));
        }
        let (bits, _) = expect(seq, BIT_STRING, "public key has no bit string")?;
        match bits.split_first() {
            Some((0, pkcs1)) => Self::from_pkcs1(pkcs1),
            _ => Err(malformed("public key bit string is malformed")),
        }
    }

    pub(crate) fn from_ints(n: &[u8], e: &[u8]) -> Result<Self> {
        let parts = Self {
            n: unsigned(n).to_vec(),
            e: unsigned(e).to_vec(),
        };
        if parts.n.is_empty() || parts.e.is_empty() {
            return Err(malformed("rsa key has a zero modulus or exponent"));
        }
        Ok(parts)
    }
}

/// The public half of a DER `RSAPrivateKey` (PKCS#1).
pub(crate) fn public_of_pkcs1_private(der: &[u8]) -> Result<RsaPublicParts> {
    let (seq, rest) = expect(der, SEQUENCE, "private key is not a der sequence")?;
    if !rest.is_empty() {
        return Err(malformed("trailing data after private key"));
    }
    let (version, seq) = expect(seq, INTEGER, "private key has no version")?;
    if version != [0] {
        return Err(Error::new(
            ErrorKind::UnsupportedKey,
            "multi-prime rsa keys are not supported",
        ));
    }
    let (n, seq) = expect(seq, INTEGER, "private key has no modulus")?;
    let (e, _) = expect(seq, INTEGER, "private key has no public exponent")?;
    RsaPublicParts::from_ints(n, e)
}

/// The `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`; rejects other algorithms.
pub(crate) fn pkcs1_of_pkcs8(der: &[u8]) -> Result<&[u8]> {
    let (seq, rest) = expect(der, SEQUENCE, "private key is not a der sequence")?;
    if !rest.is_empty() {
        return Err(malformed("trailing data after private key"));
    }
    let (_version, seq) = expect(seq, INTEGER, "pkcs#8 key has no version")?;
    let (alg, seq) = expect(seq, SEQUENCE, "pkcs#8 key has no algorithm")?;
    let (oid, _) = expect(alg, OID, "pkcs#8 key algorithm has no oid")?;
    if oid != RSA_ENCRYPTION {
        return Err(Error::new(
            ErrorKind::UnsupportedKey,
            "private key is not an rsa key (only rsa keys sign oci requests)",
        ));
    }
    let (key, _) = expect(seq, OCTET_STRING, "pkcs#8 key has no key octets")?;
    Ok(key)
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    write_len(out, content.len());
    out.extend_from_slice(content);
}

fn write_uint(out: &mut Vec<u8>, value: &[u8]) {
    let value = unsigned(value);
    let pad = value.first().is_none_or(|&b| b & 0x80 != 0);
    out.push(INTEGER);
    write_len(out, value.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trip_keeps_modulus_and_exponent() {
        let parts = RsaPublicParts {
            n: vec![0xc0; 256],
            e: vec![1, 0, 1],
        };
        let spki = parts.to_spki();
        assert_eq!(RsaPublicParts::from_spki(&spki).ok(), Some(parts.clone()));
        assert_eq!(parts.bits(), 2048);
    }

    #[test]
    fn truncated_der_is_an_error_not_a_panic() {
        let spki = RsaPublicParts {
            n: vec![0xc0; 256],
            e: vec![1, 0, 1],
        }
        .to_spki();
        for cut in 0..spki.len() {
            let prefix = spki.get(..cut).unwrap_or_default();
            assert!(RsaPublicParts::from_spki(prefix).is_err(), "cut at {cut}");
        }
    }
}
