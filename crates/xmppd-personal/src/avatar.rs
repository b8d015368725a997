//! The avatar in its two forms (XEP-0398): the vCard's `<PHOTO/>` (XEP-0054, whose hash
//! XEP-0153 puts in presence) and the personal eventing avatar (XEP-0084: the image in
//! `urn:xmpp:avatar:data`, its description in `urn:xmpp:avatar:metadata`, both under the
//! image's SHA-1). Pure conversions between them.

use sha1::{Digest, Sha1};
use xmpp_parsers::avatar::{Data, Info, Metadata};
use xmpp_parsers::hashes::Sha1HexAttribute;
use xmpp_parsers::vcard::{Binval, Photo, Type};

/// The SHA-1 of an image (XEP-0153 §4.1, XEP-0084 §4.2.1 `id`).
pub fn hash(image: &[u8]) -> [u8; 20] {
    Sha1::digest(image).into()
}

/// A hash as the ids and attributes carry it: lower-case hex.
pub fn hex(hash: &[u8; 20]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The XEP-0084 items of a vCard photo: its id, data and metadata.
pub fn to_pep(photo: &Photo) -> (String, Data, Metadata) {
    let image = &photo.binval.data;
    let id = hex(&hash(image));
    let info = Info {
        bytes: image.len().try_into().unwrap_or(u32::MAX),
        width: None,
        height: None,
        id: id.parse::<Sha1HexAttribute>().expect("40 hex digits"),
        type_: photo.type_.data.clone(),
        url: None,
    };
    let data = Data {
        data: image.clone(),
    };
    (id, data, Metadata { infos: vec![info] })
}

/// The image of `metadata` that its data node holds (one without a URL, XEP-0084 §4.2.1),
/// with its id; `None` when the metadata says there is no avatar or only names URLs.
pub fn stored_image(metadata: &Metadata) -> Option<&Info> {
    (metadata.infos.iter()).find(|i| i.url.as_deref().is_none_or(str::is_empty))
}

/// The vCard photo of the image `data`, of the type `info` says.
pub fn to_photo(info: &Info, data: Data) -> Photo {
    Photo {
        type_: Type {
            data: info.type_.clone(),
        },
        binval: Binval { data: data.data },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_and_its_pep_items_agree_both_ways() {
        let photo = Photo {
            type_: Type {
                data: "image/png".into(),
            },
            binval: Binval {
                data: b"not really a png".to_vec(),
            },
        };
        let (id, data, metadata) = to_pep(&photo);
        // sha1("not really a png")
        assert_eq!(id, hex(&hash(b"not really a png")));
        assert_eq!(id.len(), 40);
        let info = stored_image(&metadata).unwrap();
        assert_eq!(info.bytes, 16);
        assert_eq!(info.id.to_hex(), id);
        assert_eq!(to_photo(info, data), photo);
    }

    #[test]
    fn the_hash_is_sha1_in_lower_case_hex() {
        assert_eq!(
            hex(&hash(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn only_an_image_without_url_is_in_the_data_node() {
        let info = |url: Option<&str>| Info {
            bytes: 1,
            width: None,
            height: None,
            id: "a9993e364706816aba3e25717850c26c9cd0d89d".parse().unwrap(),
            type_: "image/png".into(),
            url: url.map(str::to_owned),
        };
        let m = Metadata {
            infos: vec![info(Some("https://x/a.png")), info(None)],
        };
        assert!(stored_image(&m).unwrap().url.is_none());
        assert!(stored_image(&Metadata { infos: vec![] }).is_none());
        let only_url = Metadata {
            infos: vec![info(Some("https://x/a.png"))],
        };
        assert!(stored_image(&only_url).is_none());
    }
}
