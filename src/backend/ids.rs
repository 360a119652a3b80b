//! Resource ids in the real API's shape: 3 fixed letters, then 17 base32 characters, 20 in all.

/// Prefix of image ids.
pub(crate) const IMAGE_ID_PREFIX: &str = "fd8";
/// Prefix of service account key ids.
pub(crate) const KEY_ID_PREFIX: &str = "ajk";
/// Prefix of operation ids.
pub(crate) const OPERATION_ID_PREFIX: &str = "epd";

/// A new ID: the prefix, 10 characters of the time in milliseconds, then 7 random ones (35
/// bits), all from an alphabet in ASCII order. IDs made later sort later, so the store's
/// B-trees take new records at their right edge: a batch of writes dirties (copies, then
/// fsyncs) a few pages instead of one page per record, as random IDs did. The IDs look like
/// the real API's and promise nothing about their order; they only reveal the creation time
/// that the resource shows anyway.
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(20);
    id.push_str(prefix);
    for i in (0..10).rev() {
        id.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
    }
    for i in 0..7 {
        id.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// IDs keep the real API's shape (prefix + 17 lowercase base32 characters), differ, and
    /// sort in creation order across milliseconds (what keeps the store's inserts local).
    #[test]
    fn ids_have_the_api_shape_and_sort_by_creation() {
        let first = new_id(OPERATION_ID_PREFIX);
        assert_eq!(first.len(), 20);
        assert!(first.starts_with("epd"));
        assert!(
            first[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{first}"
        );
        std::thread::sleep(Duration::from_millis(2));
        let later: Vec<String> = (0..100).map(|_| new_id(OPERATION_ID_PREFIX)).collect();
        assert!(later.iter().all(|id| *id > first), "{first} vs {later:?}");
        let distinct: std::collections::BTreeSet<_> = later.iter().collect();
        assert_eq!(distinct.len(), later.len());
    }
}
