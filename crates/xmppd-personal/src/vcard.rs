//! [`VCards`]: vCard-temp (XEP-0054) and the avatar kept in step (XEP-0153, XEP-0398).
//!
//! - An account sets its own vCard (to its bare JID, or no `to`); anyone gets anyone's (an
//!   account that never set one has an empty `<vCard/>`). Stored, bounded in size
//!   ([`VCards::new`]'s `max_bytes`, a larger one is refused with `<not-acceptable/>`).
//! - XEP-0398: a new vCard photo is published as the account's XEP-0084 avatar (data, then
//!   metadata; an empty `<metadata/>` when the photo is gone), and an avatar the account
//!   publishes becomes its vCard photo (an empty metadata removes it).
//! - XEP-0153 §4.1 on the server's side: every available presence of the account carries the
//!   photo's SHA-1 in `<x xmlns='vcard-temp:x:update'/>` (empty `<photo/>` for none), in place
//!   of what the client put there, once the account has a vCard.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::BareJid;
use minidom::Element;
use xmpp_parsers::avatar::{Data, Metadata};
use xmpp_parsers::ns;
use xmpp_parsers::vcard::{Photo, VCard};
use xmpp_parsers::vcard_update::{Photo as UpdatePhoto, VCardUpdate};
use xmppd_core::address::Bare;
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::{user_ref, ClientSession, Context, PresenceState};
use xmppd_pubsub::{Pep, PepWatcher};

use crate::avatar;
use crate::nodes;
use crate::store::PersonalStore;
use crate::{serialize, storage_error};

/// XEP-0398 §3: the account's disco#info says the server converts.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// What presence says of an account's avatar: nothing (no vCard stored), or the photo's hash
/// (`None`: a vCard without photo).
type PhotoState = Option<Option<[u8; 20]>>;

/// vCards and avatar conversion.
pub struct VCards {
    store: Arc<dyn PersonalStore>,
    pep: Arc<Pep>,
    max_bytes: usize,
    /// The state of each account whose vCard was read, kept current by every change.
    photos: DashMap<BareJid, PhotoState>,
    /// Changes one at a time: a vCard set and an avatar publish each read the other form.
    changes: tokio::sync::Mutex<()>,
}

fn photo_hash(vcard: &VCard) -> Option<[u8; 20]> {
    vcard.photo.as_ref().map(|p| avatar::hash(&p.binval.data))
}

impl VCards {
    pub fn new(store: Arc<dyn PersonalStore>, pep: Arc<Pep>, max_bytes: usize) -> VCards {
        VCards {
            store,
            pep,
            max_bytes,
            photos: DashMap::new(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// `owner`'s stored vCard, as an element and typed (a stored one the typed form cannot
    /// read is served as it is, with no photo).
    async fn stored(&self, owner: &BareJid) -> Result<Option<(Element, VCard)>, StanzaError> {
        let xml = (self.store.vcard(&user_ref(owner)).await).map_err(storage_error)?;
        let Some(xml) = xml else { return Ok(None) };
        let el = xml.parse::<Element>().map_err(|e| {
            tracing::warn!(error = %e, %owner, "a stored vCard does not parse");
            StanzaError::new(Condition::InternalServerError)
        })?;
        let typed = VCard::try_from(el.clone()).unwrap_or(VCard {
            photo: None,
            payloads: Vec::new(),
        });
        Ok(Some((el, typed)))
    }

    async fn photo_state(&self, owner: &BareJid) -> PhotoState {
        if let Some(state) = self.photos.get(owner) {
            return *state;
        }
        match self.stored(owner).await {
            Ok(stored) => {
                let state = stored.map(|(_, v)| photo_hash(&v));
                self.photos.insert(owner.clone(), state);
                state
            }
            Err(_) => None,
        }
    }

    /// Stores `vcard` as `owner`'s; returns the photo hash it had before.
    async fn store(&self, owner: &BareJid, vcard: &Element) -> Result<PhotoState, StanzaError> {
        let xml = serialize(vcard);
        if xml.len() > self.max_bytes {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                format!("The vCard is larger than {} bytes", self.max_bytes),
            ));
        }
        let before = self.photo_state(owner).await;
        (self.store.set_vcard(&user_ref(owner), &xml).await).map_err(storage_error)?;
        let typed = VCard::try_from(vcard.clone()).ok();
        self.photos
            .insert(owner.clone(), Some(typed.as_ref().and_then(photo_hash)));
        Ok(before)
    }

    /// XEP-0398 §4.1: the vCard's new photo becomes the account's avatar.
    async fn publish_avatar(&self, cx: &mut Context<'_>, owner: &BareJid, photo: Option<&Photo>) {
        let published = match photo {
            Some(photo) => {
                let (id, data, metadata) = avatar::to_pep(photo);
                let data_node = ns::AVATAR_DATA;
                let data = Element::from(data);
                match nodes::publish(&self.pep, cx, owner, data_node, Some(&id), data, &[]).await {
                    Ok(()) => {
                        let metadata = Element::from(metadata);
                        let node = ns::AVATAR_METADATA;
                        nodes::publish(&self.pep, cx, owner, node, Some(&id), metadata, &[]).await
                    }
                    Err(e) => Err(e),
                }
            }
            // XEP-0084 §4.5: an empty metadata says the avatar is gone.
            None => {
                let empty = Element::from(Metadata { infos: Vec::new() });
                let node = ns::AVATAR_METADATA;
                nodes::publish(&self.pep, cx, owner, node, None, empty, &[]).await
            }
        };
        if let Err(e) = published {
            tracing::warn!(%owner, error = ?e, "vcard: the photo was not published as the avatar");
        }
    }

    /// XEP-0398 §4.2: the avatar the account published becomes its vCard photo.
    async fn avatar_published(&self, cx: &mut Context<'_>, owner: &BareJid) -> Option<()> {
        let last = nodes::items(&self.pep, cx, owner, ns::AVATAR_METADATA, Some(1)).await;
        let metadata = match last.ok()?.unwrap_or_default().into_iter().next() {
            Some((_, el)) => Metadata::try_from(el).ok()?,
            None => Metadata { infos: Vec::new() },
        };
        let photo = match avatar::stored_image(&metadata) {
            Some(info) => {
                let id = info.id.to_hex();
                let data = nodes::items(&self.pep, cx, owner, ns::AVATAR_DATA, None).await;
                let (_, el) = (data.ok()??.into_iter()).find(|(i, _)| *i == id)?;
                Some(avatar::to_photo(info, Data::try_from(el).ok()?))
            }
            // Only a URL: nothing the vCard could hold; the photo stays as it is.
            None if !metadata.infos.is_empty() => return None,
            None => None,
        };
        let new_hash = photo.as_ref().map(|p| avatar::hash(&p.binval.data));
        let stored = self.stored(owner).await.ok()?;
        let old_hash = stored.as_ref().and_then(|(_, v)| photo_hash(v));
        if new_hash == old_hash {
            return None;
        }
        let (el, typed) = stored.unwrap_or_else(|| {
            let empty = VCard {
                photo: None,
                payloads: Vec::new(),
            };
            (Element::from(empty.clone()), empty)
        });
        let vcard = with_photo(&el, typed, photo);
        if let Err(e) = self.store(owner, &vcard).await {
            tracing::warn!(%owner, error = ?e, "vcard: the avatar was not kept as the vCard photo");
        }
        Some(())
    }
}

/// `vcard` with its photo replaced by `photo`, the rest as stored.
fn with_photo(el: &Element, mut typed: VCard, photo: Option<Photo>) -> Element {
    if VCard::try_from(el.clone()).is_err() {
        // A vCard the typed form cannot read (a PHOTO it does not know): the element is
        // kept but for its PHOTO.
        let mut out = Element::builder("vCard", ns::VCARD).build();
        for child in el.children().filter(|c| !c.is("PHOTO", ns::VCARD)) {
            out.append_child(child.clone());
        }
        if let Some(photo) = photo {
            out.append_child(photo.into());
        }
        return out;
    }
    typed.photo = photo;
    typed.into()
}

#[async_trait]
impl Module for VCards {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            presence_out: true,
            ..Hooks::NONE
        }
    }

    /// Clients look for vcard-temp on the server before they offer vCards (XEP-0054 §2).
    fn server_features(&self) -> Vec<String> {
        vec![ns::VCARD.to_owned()]
    }

    fn account_features(&self) -> Vec<String> {
        vec![ns::VCARD.to_owned(), NS_CONVERSION.to_owned()]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::VCARD]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let owner = req.to.bare();
        if req.payload.name() != "vCard" {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        let exists = cx.store().user_exists(&user_ref(&owner)).await;
        if !exists.map_err(storage_error)? {
            // RFC 6121 §8.5.1: no such account.
            return Err(StanzaError::new(Condition::ServiceUnavailable));
        }
        match req.kind {
            IqKind::Get => {
                let stored = self.stored(&owner).await?;
                Ok(Some(stored.map(|(el, _)| el).unwrap_or_else(|| {
                    Element::from(VCard {
                        photo: None,
                        payloads: Vec::new(),
                    })
                })))
            }
            IqKind::Set => {
                // XEP-0054 §3.2: one's own vCard only.
                if req.from.bare() != owner {
                    return Err(StanzaError::new(Condition::Forbidden));
                }
                let typed = VCard::try_from(req.payload.clone()).map_err(|e| {
                    StanzaError::with_text(Condition::BadRequest, format!("Malformed vCard: {e}"))
                })?;
                let _change = self.changes.lock().await;
                let before = self.store(&owner, &req.payload).await?;
                let after = photo_hash(&typed);
                // A first vCard without a photo changes no avatar there may be.
                if before.flatten() != after && (before.is_some() || after.is_some()) {
                    self.publish_avatar(cx, &owner, typed.photo.as_ref()).await;
                }
                Ok(None)
            }
        }
    }

    async fn on_presence_out(
        &self,
        _cx: &mut Context<'_>,
        session: &ClientSession,
        _state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        if pres.attr("type").is_some() {
            return HookAction::Continue;
        }
        let Some(hash) = self.photo_state(&session.jid.bare()).await else {
            return HookAction::Continue;
        };
        pres.remove_child("x", ns::VCARD_UPDATE);
        let update = VCardUpdate {
            photo: Some(UpdatePhoto { data: hash }),
        };
        pres.append_child(update.into());
        HookAction::Continue
    }

    async fn on_account_removed(&self, _cx: &mut Context<'_>, user: &BareJid) {
        // The rows went with the account (a trigger); the kept state goes here.
        self.photos.remove(user);
    }
}

#[async_trait]
impl PepWatcher for VCards {
    async fn on_node_changed(&self, cx: &mut Context<'_>, owner: &BareJid, node: &str) {
        if node == ns::AVATAR_METADATA {
            let _change = self.changes.lock().await;
            self.avatar_published(cx, owner).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::vcard::{Binval, Type};

    fn photo(data: &[u8]) -> Photo {
        Photo {
            type_: Type {
                data: "image/png".into(),
            },
            binval: Binval {
                data: data.to_vec(),
            },
        }
    }

    #[test]
    fn the_photo_is_replaced_and_the_rest_kept() {
        let el: Element = "<vCard xmlns='vcard-temp'><FN>Alice</FN>\
            <PHOTO><TYPE>image/gif</TYPE><BINVAL>AAAA</BINVAL></PHOTO></vCard>"
            .parse()
            .unwrap();
        let typed = VCard::try_from(el.clone()).unwrap();
        let out = with_photo(&el, typed, Some(photo(b"new")));
        let out = VCard::try_from(out).unwrap();
        assert_eq!(out.photo, Some(photo(b"new")));
        assert!(out.payloads.iter().any(|p| p.is("FN", ns::VCARD)));
    }

    #[test]
    fn a_photo_the_typed_form_cannot_read_is_replaced_too() {
        let el: Element = "<vCard xmlns='vcard-temp'><NICKNAME>al</NICKNAME>\
            <PHOTO><EXTVAL>https://x/a.png</EXTVAL></PHOTO></vCard>"
            .parse()
            .unwrap();
        let empty = VCard {
            photo: None,
            payloads: Vec::new(),
        };
        let out = with_photo(&el, empty.clone(), None);
        assert!(out.get_child("PHOTO", ns::VCARD).is_none());
        assert!(out.get_child("NICKNAME", ns::VCARD).is_some());
        let out = with_photo(&el, empty, Some(photo(b"x")));
        assert_eq!(VCard::try_from(out).unwrap().photo, Some(photo(b"x")));
    }
}
