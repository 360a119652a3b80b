//! Opaque page tokens for keyset pagination: the sort key of the last item returned, so pages
//! have no duplicates or gaps while items are added.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::validate::invalid;

/// Encodes the parts of a sort key (plus a tag naming the ordering) as a token.
pub fn encode(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\0"))
}

/// Decodes a token made by [`encode`] with `n` parts; an empty token is `None`.
pub fn decode(field: &str, token: &str, n: usize) -> Result<Option<Vec<String>>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid(field, "is not a page token returned by this service");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(Some(parts))
}

/// The page size to use: `requested`, or 100 when 0.
pub fn size(requested: i64) -> usize {
    if requested == 0 {
        100
    } else {
        requested as usize
    }
}
