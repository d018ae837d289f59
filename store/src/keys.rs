//! Keys: big-endian `u64`s (so sled's byte order is numeric order) and
//! `scope \0 name` compound keys (so one scope is one prefix).

/// `n` as a key: 8 bytes, big-endian, sorting as numbers do.
pub fn be_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The number in a key or value written by [`be_u64`]. Shorter input is
/// read as if padded with leading zeros; bytes beyond 8 are ignored.
pub fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// `scope \0`: the prefix of every [`compound`] key of `scope`. Scopes
/// (kiosk ids, printer names) never contain a NUL byte.
pub fn prefix(scope: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + 1);
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k
}

/// `scope \0 name`.
pub fn compound(scope: &str, name: &[u8]) -> Vec<u8> {
    let mut k = prefix(scope);
    k.extend_from_slice(name);
    k
}

/// Splits a [`compound`] key into its scope and name; `None` without a NUL
/// or when the scope is not UTF-8.
pub fn split(key: &[u8]) -> Option<(&str, &[u8])> {
    let at = key.iter().position(|b| *b == 0)?;
    let scope = std::str::from_utf8(&key[..at]).ok()?;
    Some((scope, &key[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_keys_sort_as_numbers_and_read_back() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 0].map(be_u64).to_vec();
        keys.sort();
        let read: Vec<u64> = keys.iter().map(|k| read_u64(k)).collect();
        assert_eq!(read, [0, 2, 300, 1 << 40]);
        assert_eq!(read_u64(&[1, 0]), 256);
        assert_eq!(read_u64(&[]), 0);
    }

    #[test]
    fn compound_keys_split_back() {
        let k = compound("k1", b"job-7");
        assert!(k.starts_with(&prefix("k1")));
        assert!(!k.starts_with(&prefix("k")));
        assert_eq!(split(&k), Some(("k1", &b"job-7"[..])));
        assert_eq!(split(b"no-nul"), None);
    }
}
