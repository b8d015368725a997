//! The upload service on `upload.HOST` (XEP-0363): disco and slot requests.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::disco::Identity;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult};
use xmpp_parsers::http_upload::{Get, Put, SlotResult};
use xmpp_parsers::ns;
use xmppd_core::address::Bare;
use xmppd_core::module::Component;
use xmppd_core::stanza::{iq_result, Condition, ErrorType, StanzaError};
use xmppd_core::Context;

use crate::name::{check_content_type, check_filename, encode_segment, new_id};
use crate::sign::{external_token, Signed};
use crate::store::{Refusal, Slot};
use crate::{Backend, Uploads};

/// XEP-0363 §4's slot request. xmpp-parsers' own requires `content-type`, which the XEP
/// leaves optional.
#[derive(xso::FromXml, xso::AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::HTTP_UPLOAD, name = "request")]
pub struct SlotRequest {
    #[xml(attribute)]
    pub filename: String,
    #[xml(attribute)]
    pub size: u64,
    #[xml(attribute(name = "content-type", default))]
    pub content_type: Option<String>,
}

/// XEP-0363 §5's `<file-too-large/>`, with the service's limit.
#[derive(xso::FromXml, xso::AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::HTTP_UPLOAD, name = "file-too-large")]
pub struct FileTooLarge {
    #[xml(child)]
    pub max_file_size: MaxFileSize,
}

#[derive(xso::FromXml, xso::AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::HTTP_UPLOAD, name = "max-file-size")]
pub struct MaxFileSize {
    #[xml(text)]
    pub bytes: u64,
}

/// The service on one domain; every host's shares the same [`Uploads`].
pub struct UploadComponent {
    domain: String,
    /// The host the service belongs to: its accounts' files go with their accounts.
    host: String,
    uploads: Arc<Uploads>,
}

impl UploadComponent {
    pub fn new(host: &str, domain: &str, uploads: Arc<Uploads>) -> UploadComponent {
        UploadComponent {
            domain: domain.to_owned(),
            host: host.to_owned(),
            uploads,
        }
    }

    fn disco_info(&self) -> DiscoInfoResult {
        let max = self.uploads.settings.max_file_bytes.to_string();
        let form = DataForm::new(
            DataFormType::Result_,
            ns::HTTP_UPLOAD,
            vec![Field::text_single("max-file-size", &max)],
        );
        DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "store".into(),
                type_: "file".into(),
                lang: None,
                name: Some("HTTP File Upload".into()),
            }],
            features: [ns::DISCO_INFO, ns::HTTP_UPLOAD]
                .into_iter()
                .map(String::from)
                .collect(),
            extensions: vec![form],
        }
    }

    async fn request(&self, cx: &Context<'_>, iq: &Element) -> Result<Element, StanzaError> {
        let bad = |e: xso::error::FromElementError| {
            StanzaError::with_text(Condition::BadRequest, format!("Malformed request: {e}"))
        };
        let mut children = iq.children();
        let (Some(payload), None) = (children.next(), children.next()) else {
            return Err(StanzaError::new(Condition::BadRequest));
        };
        let payload = payload.clone();
        let get = iq.attr("type") == Some("get");
        if payload.is("query", ns::DISCO_INFO) && get {
            let q = DiscoInfoQuery::try_from(payload).map_err(bad)?;
            if q.node.is_some() {
                return Err(StanzaError::new(Condition::ItemNotFound));
            }
            return Ok(self.disco_info().into());
        }
        if payload.is("query", ns::DISCO_ITEMS) && get {
            let q = DiscoItemsQuery::try_from(payload).map_err(bad)?;
            let items = DiscoItemsResult {
                node: q.node,
                items: Vec::new(),
                rsm: None,
            };
            return Ok(items.into());
        }
        if payload.is("request", ns::HTTP_UPLOAD) && get {
            let from = iq.attr("from").and_then(|f| Jid::new(f).ok());
            let from = from.ok_or_else(|| StanzaError::new(Condition::BadRequest))?;
            let req = SlotRequest::try_from(payload).map_err(bad)?;
            return self.slot(cx, &from.bare(), req).await.map(Element::from);
        }
        Err(StanzaError::new(Condition::ServiceUnavailable))
    }

    /// XEP-0363 §4: a slot for `req`, or §5's error.
    async fn slot(
        &self,
        cx: &Context<'_>,
        from: &BareJid,
        req: SlotRequest,
    ) -> Result<SlotResult, StanzaError> {
        let settings = &self.uploads.settings;
        let host = from.domain().as_str();
        if from.node().is_none() || !cx.is_local_host(host) {
            let why = "Only accounts of this server may upload files";
            return Err(StanzaError::with_text(Condition::NotAllowed, why));
        }
        if let Err(why) = check_filename(&req.filename) {
            let text = format!("Invalid file name: {why}");
            return Err(StanzaError::with_text(Condition::BadRequest, text));
        }
        if req.size == 0 {
            let why = "The file is empty: nothing to upload";
            return Err(StanzaError::with_text(Condition::BadRequest, why));
        }
        let max = settings.max_file_bytes;
        if req.size > max {
            let text = format!("File too large: the maximum file size is {max} bytes");
            let app = FileTooLarge {
                max_file_size: MaxFileSize { bytes: max },
            };
            let err = StanzaError::with_text(Condition::NotAcceptable, text);
            return Err(err.with_app(Element::from(app)));
        }
        let content_type = req.content_type.filter(|t| !t.is_empty());
        if content_type
            .as_deref()
            .is_some_and(|t| !check_content_type(t))
        {
            let why = "Invalid content type: expected type/subtype";
            return Err(StanzaError::with_text(Condition::BadRequest, why));
        }
        let id = new_id();
        let name = encode_segment(&req.filename);
        match &self.uploads.backend {
            Backend::External { url, secret } => {
                // The external service's files have no content type of their own.
                let t = content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream");
                let path = format!("{id}/{}", req.filename);
                let token = external_token(secret, &path, req.size, t);
                let get = format!("{url}{id}/{name}");
                Ok(slot_result(format!("{get}?v2={token}"), get))
            }
            Backend::Local(files) => {
                let unavailable = || {
                    let why = "The upload service is not ready yet";
                    let mut e = StanzaError::with_text(Condition::InternalServerError, why);
                    e.kind = ErrorType::Wait;
                    e
                };
                let base = files.base_url(host).ok_or_else(unavailable)?;
                let now_ms = cx.now_ms();
                let lifetime = settings.slot_lifetime.as_secs();
                let expires = (now_ms / 1000) as u64 + lifetime;
                let slot = Slot {
                    id: id.clone(),
                    owner: from.to_string(),
                    name: req.filename.clone(),
                    size: req.size,
                    content_type: content_type.clone(),
                    state: crate::store::State::Issued,
                    stamp_ms: now_ms,
                    expires_ms: (expires as i64).saturating_mul(1000),
                };
                let (quota, cap) = (settings.quota_bytes_per_user, settings.max_total_bytes);
                let reserved = files.store.reserve(slot, quota, cap).await;
                match reserved.map_err(|e| {
                    tracing::warn!(error = %e, "storing an upload slot");
                    unavailable()
                })? {
                    Ok(()) => {}
                    Err(refusal) => return Err(refused(refusal)),
                }
                let sig = Signed {
                    id: &id,
                    size: req.size,
                    content_type: content_type.as_deref(),
                    expires,
                }
                .sign(&files.key);
                let get = format!("{base}/{id}/{name}");
                Ok(slot_result(
                    format!("{get}?expires={expires}&sig={sig}"),
                    get,
                ))
            }
        }
    }
}

fn slot_result(put: String, get: String) -> SlotResult {
    SlotResult {
        put: Put {
            url: put,
            headers: Vec::new(),
        },
        get: Get { url: get },
    }
}

/// XEP-0363 §5: a quota or a full disk is a temporary condition.
fn refused(refusal: Refusal) -> StanzaError {
    let text = match refusal {
        Refusal::Quota { used, quota } => format!(
            "Quota exceeded: your files may take {quota} bytes and already take {used}; \
             wait until old ones expire"
        ),
        Refusal::Full => "The server's file storage is full; try again later".into(),
    };
    let mut e = StanzaError::with_text(Condition::ResourceConstraint, text);
    e.kind = ErrorType::Wait;
    e
}

#[async_trait]
impl Component for UploadComponent {
    fn name(&self) -> &str {
        "HTTP File Upload"
    }

    async fn handle(&self, cx: &mut Context<'_>, stanza: Element) {
        if !cx.domain_request(&stanza, &self.domain) {
            return;
        }
        match self.request(cx, &stanza).await {
            Ok(payload) => cx.send(iq_result(&stanza, Some(payload))),
            Err(e) => cx.bounce(&stanza, e),
        }
    }

    async fn on_account_removed(&self, cx: &mut Context<'_>, user: &BareJid) {
        let _ = cx;
        if user.domain().as_str() != self.host {
            return;
        }
        if let Some(files) = self.uploads.files() {
            match files.store.take_owner(user.as_str()).await {
                Ok(slots) => crate::expiry::remove_files(files, &slots).await,
                Err(e) => tracing::warn!(error = %e, "removing an account's uploads"),
            }
        }
    }
}
