//! Answering archive IQs, the same way for every archive, an account's ([`crate::module`]) or
//! a room's ([`crate::room`]): the query form (XEP-0313 §4.1.5), a query's page as result
//! messages and its `<fin/>` (§4.2, §4.3, XEP-0059), the metadata (§6). Each caller decides
//! who may ask, and how a stored message is shown to the asker.

use minidom::Element;
use xmppd_core::module::IqKind;
use xmppd_core::stanza::{Condition, StanzaError};

use crate::query::{self, PageLimits};
use crate::store::{ArchiveError, ArchiveStore};

/// The result messages of a query, addressed to the asker, to send in order before the IQ
/// result with `payload` (XEP-0313 §4.2).
#[derive(Debug, Default)]
pub struct Answer {
    pub results: Vec<Element>,
    pub payload: Option<Element>,
}

pub(crate) fn storage_error(e: impl std::fmt::Display) -> StanzaError {
    tracing::error!(error = %e, "message archive storage error");
    StanzaError::new(Condition::InternalServerError)
}

/// Answers `payload` of an IQ `kind` to the archive of `owner` from `asker` (a JID as text):
/// `<query/>` (get: the form; set: a page), `<metadata/>` (get). Anything else is
/// `<feature-not-implemented/>`. `show` turns each stored message into what the asker sees.
pub async fn answer(
    store: &dyn ArchiveStore,
    limits: PageLimits,
    owner: &str,
    asker: &str,
    payload: &Element,
    kind: IqKind,
    show: impl Fn(Element) -> Element,
) -> Result<Answer, StanzaError> {
    let answer = |payload| Answer {
        results: Vec::new(),
        payload: Some(payload),
    };
    match (payload.name(), kind) {
        ("query", IqKind::Get) => Ok(answer(query::query_form())),
        ("query", IqKind::Set) => page(store, limits, owner, asker, payload, show).await,
        ("metadata", IqKind::Get) => {
            let bounds = store.bounds(owner).await.map_err(storage_error)?;
            Ok(answer(query::metadata(bounds)))
        }
        _ => Err(StanzaError::new(Condition::FeatureNotImplemented)),
    }
}

async fn page(
    store: &dyn ArchiveStore,
    limits: PageLimits,
    owner: &str,
    asker: &str,
    payload: &Element,
    show: impl Fn(Element) -> Element,
) -> Result<Answer, StanzaError> {
    let q = query::parse_query(payload, limits)?;
    let page = match store.query(owner, q.request).await {
        Ok(p) => p,
        Err(ArchiveError::UnknownId) => {
            return Err(StanzaError::with_text(
                Condition::ItemNotFound,
                "No such archive id",
            ))
        }
        Err(ArchiveError::Storage(e)) => return Err(storage_error(e)),
    };
    let mut items: Vec<_> = page.items.iter().collect();
    if q.flip {
        items.reverse();
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let Ok(stored) = item.stanza.parse::<Element>() else {
            tracing::warn!(id = item.id, "an archived stanza does not parse; skipped");
            continue;
        };
        let shown = show(stored);
        results.push(query::forwarded_result(
            owner,
            asker,
            q.queryid.as_deref(),
            item,
            shown,
        ));
    }
    Ok(Answer {
        results,
        payload: Some(query::fin(&page)),
    })
}
