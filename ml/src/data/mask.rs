//! Masking personal columns: pure functions over a block's feature bytes,
//! keyed by a namespace's masking key (`prism::masking::key`). No I/O.
//!
//! Columns are the second dimension of a `[rows, columns]` features
//! tensor. Three methods, as a data-protection officer names them:
//!
//! - [`Mask::Redact`]: the value becomes 0 (any dtype). One-way.
//! - [`Mask::Hash`]: keyed pseudonymisation: HMAC-SHA256 of the value
//!   under the namespace's key, folded into the column's type (a
//!   non-negative integer of the type's width less one bit, a float in
//!   `[0, 1)`; `u8` keeps 8 bits, so it collides). One-way without the
//!   key; the same value gives the same hash in every column of its type
//!   in every dataset of the namespace (0 and -0, and every NaN, count as
//!   one), so masked tables still join — and another hash in another
//!   namespace.
//! - [`Mask::Tokenize`]: a keyed permutation of the integer's bits (a
//!   10-round Feistel network, HMAC-SHA256 as its round function, as
//!   format-preserving encryption does): a token of the same type,
//!   distinct for distinct values, and reversible with the key
//!   ([`unmask`]). Integer columns only.
//!
//! Invariants (property-tested below):
//!
//! - **MA-1** only the named columns change; the others keep their bytes;
//! - **MA-2** a token decodes to its value under the same key, and two
//!   values never share a token (the permutation is a bijection);
//! - **MA-3** hash and token depend on the key: another namespace's key
//!   gives other values.

use prism::DType;
use ring::hmac;
use std::collections::HashMap;

/// How a personal column is masked.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
pub enum Mask {
    /// Replace with 0.
    Redact,
    /// Keyed hash into the column's type (pseudonymisation; joins still work).
    Hash,
    /// Keyed, reversible, same-type token (integer columns).
    Tokenize,
}

impl Mask {
    /// Whether it needs the namespace's masking key.
    pub fn keyed(self) -> bool {
        self != Mask::Redact
    }

    /// Its name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Mask::Redact => "redact",
            Mask::Hash => "hash",
            Mask::Tokenize => "tokenize",
        }
    }
}

/// Rounds of the token permutation.
const ROUNDS: u8 = 10;

/// The keys one namespace's masking key gives: one for hashing, one for
/// tokens (so that a hash never reveals a token).
pub struct MaskKeys {
    hash: hmac::Key,
    token: hmac::Key,
}

impl MaskKeys {
    /// The keys of namespace key `key`.
    pub fn new(key: &[u8; 32]) -> MaskKeys {
        let root = hmac::Key::new(hmac::HMAC_SHA256, key);
        let sub =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        MaskKeys {
            hash: sub(b"hash"),
            token: sub(b"token"),
        }
    }

    fn hash64(&self, canonical: &[u8]) -> u64 {
        first_u64(hmac::sign(&self.hash, canonical).as_ref())
    }

    /// One Feistel round's value of `half` (`bits` wide) in round `round`.
    fn round(&self, round: u8, width: u8, half: u64, bits: u32) -> u64 {
        let mut msg = [0u8; 10];
        msg[0] = round;
        msg[1] = width;
        msg[2..].copy_from_slice(&half.to_le_bytes());
        first_u64(hmac::sign(&self.token, &msg).as_ref()) & low_bits(bits)
    }

    /// The token of the `width`-bit value `x` (MA-2).
    fn encrypt(&self, x: u64, width: u8) -> u64 {
        let h = u32::from(width) / 2;
        let (mut l, mut r) = (x >> h & low_bits(h), x & low_bits(h));
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(i, width, r, h));
        }
        l << h | r
    }

    /// The value of the `width`-bit token `y` (MA-2).
    fn decrypt(&self, y: u64, width: u8) -> u64 {
        let h = u32::from(width) / 2;
        let (mut l, mut r) = (y >> h & low_bits(h), y & low_bits(h));
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(i, width, l, h), l);
        }
        l << h | r
    }
}

fn low_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn first_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// How one element of `dtype` is read and written for masking.
#[derive(Clone, Copy)]
enum Kind {
    Int { width: u8, signed: bool },
    Float { width: u8 },
    Other,
}

fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::I64 => Kind::Int {
            width: 64,
            signed: true,
        },
        DType::I32 => Kind::Int {
            width: 32,
            signed: true,
        },
        DType::U8 => Kind::Int {
            width: 8,
            signed: false,
        },
        DType::F64 => Kind::Float { width: 64 },
        DType::F32 => Kind::Float { width: 32 },
        _ => Kind::Other,
    }
}

/// The element's bits, zero-extended.
fn load(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

fn store(b: &mut [u8], v: u64) {
    let n = b.len();
    b.copy_from_slice(&v.to_le_bytes()[..n]);
}

/// The bytes a value is hashed as: integers as `i64`, floats as `f64`
/// (with -0 and every NaN made one), so equal values hash equal across
/// column types.
fn canonical(k: Kind, bits: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    let v: u64 = match k {
        Kind::Int { width, signed } => {
            out[0] = b'i';
            if signed && width < 64 && bits >> (width - 1) & 1 == 1 {
                bits | !low_bits(u32::from(width))
            } else {
                bits
            }
        }
        Kind::Float { width } => {
            out[0] = b'f';
            let f = if width == 32 {
                f64::from(f32::from_bits(bits as u32))
            } else {
                f64::from_bits(bits)
            };
            if f.is_nan() {
                f64::NAN.to_bits()
            } else if f == 0.0 {
                0
            } else {
                f.to_bits()
            }
        }
        Kind::Other => bits,
    };
    out[1..].copy_from_slice(&v.to_le_bytes());
    out
}

/// The hash of one element, folded into its type.
fn hashed(keys: &MaskKeys, k: Kind, bits: u64) -> u64 {
    let h = keys.hash64(&canonical(k, bits));
    match k {
        Kind::Int { width: 8, .. } => h >> 56,
        Kind::Int { width, .. } => h >> (65 - u32::from(width)),
        Kind::Float { width: 32 } => ((h >> 40) as f32 / (1u64 << 24) as f32).to_bits() as u64,
        Kind::Float { .. } => ((h >> 11) as f64 / (1u64 << 53) as f64).to_bits(),
        Kind::Other => 0,
    }
}

/// Masks `columns` of `features` (`dtype`, row-major `[rows, cols]`) in
/// place with `method`; `keys` is needed for [`Mask::Hash`] and
/// [`Mask::Tokenize`]. Equal values are worked out once.
pub fn mask(
    features: &mut [u8],
    dtype: DType,
    cols: usize,
    columns: &[usize],
    method: Mask,
    keys: Option<&MaskKeys>,
) -> Result<(), String> {
    apply(features, dtype, cols, columns, Some(method), keys)
}

/// Turns tokens in `columns` back into their values ([`Mask::Tokenize`]
/// under the same `keys`).
pub fn unmask(
    features: &mut [u8],
    dtype: DType,
    cols: usize,
    columns: &[usize],
    keys: &MaskKeys,
) -> Result<(), String> {
    apply(features, dtype, cols, columns, None, Some(keys))
}

/// Checks `columns` against `cols` columns of `dtype` for `method`
/// (`None`: unmasking tokens).
pub fn check(
    dtype: DType,
    cols: usize,
    columns: &[usize],
    method: Option<Mask>,
) -> Result<(), String> {
    if let Some(c) = columns.iter().find(|c| **c >= cols) {
        return Err(format!("column {c} of {cols}"));
    }
    let fits = matches!(
        (kind(dtype), method),
        (Kind::Int { .. }, _) | (_, Some(Mask::Redact)) | (Kind::Float { .. }, Some(Mask::Hash))
    );
    if fits {
        return Ok(());
    }
    Err(match method {
        Some(Mask::Hash) => format!("hash works on integer and float columns; these are {dtype:?}"),
        Some(m) => format!(
            "{} works on integer columns (i64, i32, u8); these are {dtype:?}",
            m.name()
        ),
        None => format!("unmask works on tokenized integer columns; these are {dtype:?}"),
    })
}

/// [`mask`] with `method`, or [`unmask`] with `None`.
pub(crate) fn apply(
    features: &mut [u8],
    dtype: DType,
    cols: usize,
    columns: &[usize],
    method: Option<Mask>,
    keys: Option<&MaskKeys>,
) -> Result<(), String> {
    check(dtype, cols, columns, method)?;
    let size = dtype.size();
    if cols == 0 || !features.len().is_multiple_of(cols * size) {
        return Err(format!(
            "{} bytes are not rows of {cols} {dtype:?} columns",
            features.len()
        ));
    }
    // Redacting needs no key; everything else does.
    let keys = match (method, keys) {
        (Some(Mask::Redact), _) => None,
        (_, Some(keys)) => Some(keys),
        (_, None) => {
            let what = method.map_or("unmask", Mask::name);
            return Err(format!("{what} needs the namespace's masking key"));
        }
    };
    let k = kind(dtype);
    let width = match k {
        Kind::Int { width, .. } | Kind::Float { width } => width,
        Kind::Other => 0,
    };
    let mut memo: HashMap<u64, u64> = HashMap::new();
    for row in features.chunks_exact_mut(cols * size) {
        for &c in columns {
            let cell = &mut row[c * size..(c + 1) * size];
            let bits = load(cell);
            let out = match keys {
                None => 0,
                Some(keys) => *memo.entry(bits).or_insert_with(|| match method {
                    Some(Mask::Hash) => hashed(keys, k, bits),
                    Some(_) => keys.encrypt(bits, width),
                    None => keys.decrypt(bits, width),
                }),
            };
            store(cell, out);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
