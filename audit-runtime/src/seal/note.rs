//! The text formats that carry the trail's evidence to third parties, as the C2SP specifications
//! define them, so that tools written for transparency logs (Go's `sumdb/note`, torchwood,
//! witnesses) read them too:
//! - a *signed note* (c2sp.org/signed-note): a text, a blank line, and signature lines
//!   `— <key name> <base64(key id || Ed25519 signature)>`;
//! - a *checkpoint* (c2sp.org/tlog-checkpoint): a note whose text is the origin, the tree size
//!   and the base64 root hash, one per line;
//! - a *proof* (c2sp.org/tlog-proof): `c2sp.org/tlog-proof@v1`, an optional `extra` line, the
//!   leaf index, the inclusion proof's hashes, a blank line, and the signed checkpoint.
//!
//! Parsing is strict (exact base64, decimal numbers without leading zeros, no control
//! characters): a receipt with one bit changed anywhere must not parse as another valid one.

use super::merkle::Hash;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// The first line of a tlog proof.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// What is wrong with a note, a checkpoint, a proof or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoteError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, NoteError> {
    Err(NoteError(what.into()))
}

/// The key id of an Ed25519 key named `name`: the first four bytes of
/// SHA-256(name || "\n" || 0x01 || public key).
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Whether `name` may name a key (or a trail): not empty, no spaces, no `+`, no control
/// characters.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The verifier key string of `key` named `name`: `<name>+<hex key id>+<base64(0x01 || key)>`.
pub fn vkey(name: &str, key: &VerifyingKey) -> String {
    let mut material = vec![ED25519];
    material.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        super::hex_of(&key_id(name, key)),
        B64.encode(material)
    )
}

/// Reads a verifier key string: its name and key.
pub fn parse_vkey(s: &str) -> Result<(String, VerifyingKey), NoteError> {
    let s = s.trim();
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
        return err("a verifier key is <name>+<key id>+<key>");
    };
    if !valid_key_name(name) {
        return err("the verifier key's name is not a valid key name");
    }
    let material = decode_b64(material)?;
    let key = match material.split_first() {
        Some((&ED25519, k)) => <[u8; 32]>::try_from(k)
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok()),
        _ => None,
    };
    let Some(key) = key else {
        return err("the verifier key is not an Ed25519 key");
    };
    if id.len() != 8 || super::hex_of(&key_id(name, &key)) != id {
        return err("the verifier key's id does not match its name and key");
    }
    Ok((name.to_owned(), key))
}

/// Strict standard base64 (padding required, no stray bits).
fn decode_b64(s: &str) -> Result<Vec<u8>, NoteError> {
    B64.decode(s)
        .map_err(|e| NoteError(format!("invalid base64: {e}")))
}

fn decode_hash(s: &str) -> Result<Hash, NoteError> {
    let bytes = decode_b64(s)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| NoteError("a hash is not 32 bytes".into()))
}

/// A decimal number as the C2SP formats write it: ASCII digits, no sign, no leading zero.
fn parse_decimal(s: &str) -> Result<u64, NoteError> {
    match s.parse::<u64>() {
        Ok(n) if n.to_string() == s => Ok(n),
        _ => err(format!(
            "`{s}` is not a decimal number as the format writes it"
        )),
    }
}

/// The signature line of `sig` over a note by the key `key` named `name`.
pub fn signature_line(name: &str, key: &VerifyingKey, sig: &Signature) -> String {
    let mut bytes = key_id(name, key).to_vec();
    bytes.extend_from_slice(&sig.to_bytes());
    format!("\u{2014} {name} {}\n", B64.encode(bytes))
}

/// `text` (which ends in a newline) signed by `key` named `name`, as a signed note.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> String {
    let sig = key.sign(text.as_bytes());
    format!(
        "{text}\n{}",
        signature_line(name, &key.verifying_key(), &sig)
    )
}

/// One signature of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key's name.
    pub name: String,
    /// The key id.
    pub id: [u8; 4],
    /// The signature bytes after the id.
    pub sig: Vec<u8>,
}

/// A signed note, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text, final newline included.
    pub text: String,
    /// Its signatures.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Reads a signed note: the text, a blank line, one or more signature lines, each ending in a
    /// newline.
    pub fn parse(note: &str) -> Result<SignedNote, NoteError> {
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return err("a note holds no control characters but newlines");
        }
        let Some(split) = note.rfind("\n\n") else {
            return err("a signed note has a blank line before its signatures");
        };
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if !sigs.ends_with('\n') || sigs.len() < 2 {
            return err("a signed note ends with signature lines, each ending in a newline");
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return err("a signature line starts with an em dash and a space");
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return err("a signature line names its key, then its signature");
            };
            if !valid_key_name(name) {
                return err("a signature line's key name is not valid");
            }
            let bytes = decode_b64(b64)?;
            if bytes.len() < 5 {
                return err("a signature is a key id and at least one byte");
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                id: [bytes[0], bytes[1], bytes[2], bytes[3]],
                sig: bytes[4..].to_vec(),
            });
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Checks the signature of the key `key` named `name`: there must be one, and it must be
    /// valid (signatures of other keys are ignored, as the format says).
    pub fn verify(&self, name: &str, key: &VerifyingKey) -> Result<(), NoteError> {
        let id = key_id(name, key);
        let mut found = false;
        for s in self
            .signatures
            .iter()
            .filter(|s| s.name == name && s.id == id)
        {
            found = true;
            let sig = Signature::from_slice(&s.sig)
                .map_err(|_| NoteError("the signature is not an Ed25519 signature".into()))?;
            key.verify(self.text.as_bytes(), &sig)
                .map_err(|_| NoteError(format!("the signature of `{name}` is not valid")))?;
        }
        if found {
            Ok(())
        } else {
            err(format!("the note is not signed by the key `{name}`"))
        }
    }

    /// The note as text again.
    pub fn format(&self) -> String {
        let mut out = format!("{}\n", self.text);
        for s in &self.signatures {
            let mut bytes = s.id.to_vec();
            bytes.extend_from_slice(&s.sig);
            out.push_str(&format!("\u{2014} {} {}\n", s.name, B64.encode(bytes)));
        }
        out
    }
}

/// Reads a file of signed notes, each followed by a blank line (what the checkpoint file holds):
/// each note, or what is wrong with it.
pub fn parse_notes(file: &str) -> Vec<Result<SignedNote, NoteError>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut sigs = String::new();
    let flush = |text: &mut String, sigs: &mut String, out: &mut Vec<_>| {
        if !text.is_empty() || !sigs.is_empty() {
            out.push(SignedNote::parse(&format!("{text}\n{sigs}")));
        }
        text.clear();
        sigs.clear();
    };
    for line in file.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare.starts_with('\u{2014}') {
            sigs.push_str(line);
        } else if bare.is_empty() {
            if !sigs.is_empty() {
                flush(&mut text, &mut sigs, &mut out);
            }
        } else {
            if !sigs.is_empty() {
                flush(&mut text, &mut sigs, &mut out);
            }
            text.push_str(line);
        }
    }
    flush(&mut text, &mut sigs, &mut out);
    out
}

/// A tree head as a checkpoint states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log: here the trail and the stream (`<trail name>/<stream>`).
    pub origin: String,
    /// How many leaves.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, each line ending in a newline.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Reads a checkpoint's note text (extension lines are not written here, and refused).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let Some(body) = text.strip_suffix('\n') else {
            return err("a checkpoint's text ends in a newline");
        };
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root] = lines.as_slice() else {
            return err("a checkpoint here is three lines: origin, size, root");
        };
        if origin.is_empty() {
            return err("a checkpoint's origin is not empty");
        }
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size: parse_decimal(size)?,
            root: decode_hash(root)?,
        })
    }

    /// The stream a checkpoint of this trail is about: the last part of its origin.
    pub fn stream(&self) -> Option<bson::oid::ObjectId> {
        let (_, stream) = self.origin.rsplit_once('/')?;
        bson::oid::ObjectId::parse_str(stream).ok()
    }

    /// The name of the key that signs the trail's checkpoints: the origin without its stream.
    pub fn key_name(&self) -> &str {
        self.origin
            .rsplit_once('/')
            .map_or(self.origin.as_str(), |(n, _)| n)
    }
}

/// An inclusion proof for one entry, with the signed checkpoint it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque data carried along (here: what the leaf is made from); not authenticated by the
    /// format: whoever reads it recomputes the leaf from it.
    pub extra: Option<Vec<u8>>,
    /// The entry's index in the log.
    pub index: u64,
    /// The inclusion proof, the leaf's sibling first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// The proof as text.
    pub fn format(&self) -> String {
        let mut out = format!("{PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Reads a proof.
    pub fn parse(s: &str) -> Result<TlogProof, NoteError> {
        let Some(rest) = s
            .strip_prefix(PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
        else {
            return err(format!("a proof starts with the line `{PROOF_HEADER}`"));
        };
        let Some((head, checkpoint)) = rest.split_once("\n\n") else {
            return err("a proof's hashes end with a blank line before the checkpoint");
        };
        let mut lines = head.split('\n').peekable();
        let extra = match lines.peek() {
            Some(l) if l.starts_with("extra ") => {
                let l = lines.next().expect("peeked");
                Some(decode_b64(&l["extra ".len()..])?)
            }
            _ => None,
        };
        let index = match lines.next().and_then(|l| l.strip_prefix("index ")) {
            Some(n) => parse_decimal(n)?,
            None => return err("a proof names the entry's index"),
        };
        let hashes = lines.map(decode_hash).collect::<Result<Vec<_>, _>>()?;
        // The checkpoint must itself be a well-formed signed note.
        SignedNote::parse(checkpoint)?;
        Ok(TlogProof {
            extra,
            index,
            hashes,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's sumdb/note test key (note_test.go): seed and the note it signs.
    fn go_key() -> SigningKey {
        let seed: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(
                    &"810a1402d5146c8d84f2443330f54080ebf98ee17d9c74f6252fc5d5c7283173"[i..i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        SigningKey::from_bytes(&seed.try_into().unwrap())
    }

    #[test]
    fn notes_are_signed_as_go_signs_them() {
        let key = go_key();
        assert_eq!(
            vkey("PeterNeumann", &key.verifying_key()),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = sign(text, "PeterNeumann", &key);
        assert_eq!(
            note,
            format!(
                "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            )
        );
        let parsed = SignedNote::parse(&note).unwrap();
        assert_eq!(parsed.text, text);
        assert_eq!(parsed.format(), note);
        parsed.verify("PeterNeumann", &key.verifying_key()).unwrap();
        let (name, vk) =
            parse_vkey("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .unwrap();
        assert_eq!((name.as_str(), vk), ("PeterNeumann", key.verifying_key()));
        assert!(
            parse_vkey("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .is_err()
        );
        // Another key of the same name is not this one.
        let other = SigningKey::from_bytes(&[7; 32]);
        assert!(parsed
            .verify("PeterNeumann", &other.verifying_key())
            .is_err());
    }

    #[test]
    fn a_checkpoint_and_a_proof_round_trip_and_refuse_near_misses() {
        let key = go_key();
        let cp = Checkpoint {
            origin: "example.com/testlog".into(),
            size: 8,
            root: B64
                .decode("XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=")
                .unwrap()
                .try_into()
                .unwrap(),
        };
        let note = sign(&cp.text(), "example.com/testlog", &key);
        assert_eq!(
            note,
            "example.com/testlog\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} example.com/testlog OBSjYCxDpu8fyr7NuKXgNXWu25Ks4wrlnX0eQ6wwwqxrq024FLZEvzeTT+bFbmvjSu2f7p78iGvweJAOSG9YRH8huA0=\n"
        );
        assert_eq!(Checkpoint::parse(&cp.text()).unwrap(), cp);
        for bad in [
            "example.com/testlog\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
            "example.com/testlog\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg\n",
            "example.com/testlog\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
            "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        let proof = TlogProof {
            extra: Some(b"abc".to_vec()),
            index: 5,
            hashes: vec![[1; 32], [2; 32]],
            checkpoint: note.clone(),
        };
        let text = proof.format();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra YWJj\nindex 5\n"));
        assert_eq!(TlogProof::parse(&text).unwrap(), proof);
        let files = format!("{note}\n{note}\n");
        let notes = parse_notes(&files);
        assert_eq!(notes.len(), 2);
        assert!(notes.iter().all(|n| n.as_ref().unwrap().text == cp.text()));
    }
}
