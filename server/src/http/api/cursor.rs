//! Opaque page cursors: base64url of `<unix ms>.<id>` of the last item.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{TimeZone, Utc};

use super::error::ApiError;
use crate::store::api::Cursor;

pub fn encode(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", c.at.timestamp_millis(), c.id))
}

/// Decodes a cursor whose id must pass `id_ok`.
pub fn decode(s: &str, id_ok: impl Fn(&str) -> bool) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_parameter(format!("cursor {s:?} is not one this API handed out"));
    let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = raw.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let at = Utc.timestamp_millis_opt(ms).single().ok_or_else(bad)?;
    if !id_ok(id) {
        return Err(bad());
    }
    Ok(Cursor {
        at,
        id: id.to_owned(),
    })
}

pub fn integer_id(id: &str) -> bool {
    id.parse::<i64>().is_ok()
}

pub fn uuid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let c = Cursor {
            at: Utc
                .timestamp_millis_opt(1_700_000_000_123)
                .single()
                .expect("t"),
            id: "42".into(),
        };
        let s = encode(&c);
        assert_eq!(decode(&s, integer_id).expect("decodes"), c);
        assert!(decode(&s, uuid_id).is_err());
        assert!(decode("!!!", integer_id).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("x.1"), integer_id).is_err());
    }
}
