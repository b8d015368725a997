//! File names and URL segments. The client's file name only ever appears in URLs and in
//! `Content-Disposition`; on disk a file is named by its slot id, which the server draws, so
//! no name a client chooses can reach outside the upload directory.

use rand::RngCore;

/// Bytes of a file name, at most (the usual file system limit).
pub const MAX_NAME_BYTES: usize = 255;
/// Bytes of a content type, at most.
pub const MAX_TYPE_BYTES: usize = 255;

/// Why a file name or content type is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    Empty,
    TooLong,
    /// A path separator, a control character, or `.`/`..`.
    Forbidden,
}

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadName::Empty => "the file name is empty",
            BadName::TooLong => "the file name is longer than 255 bytes",
            BadName::Forbidden => {
                "the file name contains a slash, a backslash or a control character"
            }
        })
    }
}

/// Checks a client's file name (XEP-0363 §4 leaves its rules to the service): one path
/// segment, printable, at most [`MAX_NAME_BYTES`].
pub fn check_filename(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(BadName::TooLong);
    }
    let forbidden = |c: char| c == '/' || c == '\\' || c.is_control();
    if name.contains(forbidden) || name == "." || name == ".." {
        return Err(BadName::Forbidden);
    }
    Ok(())
}

/// Checks a content type: `type/subtype`, parameters allowed, visible ASCII only (it goes into
/// an HTTP header as it is).
pub fn check_content_type(value: &str) -> bool {
    let (kind, rest) = value.split_once('/').unwrap_or(("", ""));
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let subtype = rest.split(';').next().unwrap_or("").trim_end();
    value.len() <= MAX_TYPE_BYTES
        && token(kind)
        && token(subtype)
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The media type alone, lowercased, for comparisons (RFC 9110 §8.3.1: case-insensitive).
pub fn media_type(value: &str) -> String {
    let essence = value.split(';').next().unwrap_or("");
    essence.trim().to_ascii_lowercase()
}

/// A fresh slot id: 128 random bits in lowercase hex, the file's name on disk.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `s` is a slot id as [`new_id`] makes them (so it is safe as a file name).
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Percent-encodes everything but RFC 3986 §2.3's unreserved characters: a path segment (or
/// an RFC 8187 `filename*` value) whatever the name holds.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment; `None` when it is not valid UTF-8 or malformed.
pub fn decode_segment(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_printable_segment() {
        for good in [
            "a.png",
            "très cool.jpg",
            "..hidden",
            "a..b",
            "report (1).pdf",
            "日本.txt",
        ] {
            assert_eq!(check_filename(good), Ok(()), "{good}");
        }
        assert_eq!(check_filename(""), Err(BadName::Empty));
        assert_eq!(check_filename(&"x".repeat(256)), Err(BadName::TooLong));
        assert_eq!(check_filename(&"x".repeat(255)), Ok(()));
        for bad in [
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".",
            "..",
            "a\0b",
            "a\nb",
            "\u{7f}",
        ] {
            assert_eq!(check_filename(bad), Err(BadName::Forbidden), "{bad:?}");
        }
    }

    #[test]
    fn content_types_are_checked_and_compared_by_media_type() {
        for good in [
            "image/png",
            "text/plain; charset=utf-8",
            "application/vnd.a+json",
        ] {
            assert!(check_content_type(good), "{good}");
        }
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            "image/png\r\nX: y",
            "imäge/png",
            "a b/c",
        ] {
            assert!(!check_content_type(bad), "{bad:?}");
        }
        assert_eq!(media_type("Text/Plain ; charset=UTF-8"), "text/plain");
    }

    #[test]
    fn ids_are_random_hex_and_nothing_else_passes() {
        let (a, b) = (new_id(), new_id());
        assert!(is_id(&a) && is_id(&b) && a != b);
        for bad in [
            "",
            "..",
            &a[..31],
            &a.to_uppercase(),
            &format!("{}/", &a[..31]),
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn segments_round_trip_and_never_hold_separators() {
        for name in ["très cool.jpg", "a%2Fb", "?#&=+ /\\", "x~y-z_.png"] {
            let enc = encode_segment(name);
            assert!(!enc.contains(['/', '?', '#', ' ', '\\']), "{enc}");
            assert_eq!(decode_segment(&enc).as_deref(), Some(name));
        }
        assert_eq!(encode_segment("très cool.jpg"), "tr%C3%A8s%20cool.jpg");
        assert_eq!(decode_segment("a%2"), None);
        assert_eq!(decode_segment("%ff"), None);
        // Lowercase escapes, as some clients write them.
        assert_eq!(decode_segment("tr%c3%a8s").as_deref(), Some("très"));
    }
}
