//! Reading a XEP-0227 document one `<user/>` at a time.
//!
//! The file may hold a whole server, so it is never parsed into one tree: rxml's push parser
//! feeds minidom's tree builder, and each `<user/>` is taken out of its `<host/>` as soon as
//! it is complete. What a document may look like (XEP-0227 §4):
//!
//! - `<server-data xmlns='urn:xmpp:pie:0'>` with `<host jid='...'>` children, each holding
//!   `<user/>` elements;
//! - a `<server-data/>` whose hosts are in files of their own, named by XInclude
//!   (`<xi:include href='...'/>`, relative to the including file), each file's root being a
//!   `<host/>`, as `ejabberdctl export_piefxis` writes them;
//! - a file whose root is a `<host/>`.
//!
//! The namespace of the first version of the format
//! (`http://www.xmpp.org/extensions/xep-0227.html#ns`) is read as well.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use rxml::{RawEvent, RawReader};

use crate::ImportError;

pub const NS_PIE: &str = "urn:xmpp:pie:0";
/// The namespace of XEP-0227 before version 1.0.
pub const NS_PIE_OLD: &str = "http://www.xmpp.org/extensions/xep-0227.html#ns";
pub const NS_XINCLUDE: &str = "http://www.w3.org/2001/XInclude";

/// How deep `xi:include` may nest: a file including itself must end in an error, not a loop.
const MAX_INCLUDE_DEPTH: usize = 4;

fn is_pie(el: &Element, name: &str) -> bool {
    el.name() == name && (el.ns() == NS_PIE || el.ns() == NS_PIE_OLD)
}

/// Where in a file something is: for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A `BufRead` that counts the lines of what the parser consumed, so an event's byte offset
/// can be told as a line.
struct Lines<R> {
    inner: R,
    consumed: u64,
    /// Offsets of newlines consumed but not yet passed by a query.
    newlines: VecDeque<u64>,
    /// Newlines before the last queried offset.
    passed: u64,
}

impl<R: BufRead> io::Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Lines<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let start = self.consumed;
            let found = (buf[..amt.min(buf.len())].iter().enumerate())
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| start + i as u64);
            self.newlines.extend(found);
        }
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

impl<R> Lines<R> {
    /// The line of byte `offset`; offsets must be asked in increasing order.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|&nl| nl < offset) {
            self.newlines.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// One file being read.
struct Open {
    path: PathBuf,
    parser: RawReader<Lines<BufReader<File>>>,
    tree: TreeBuilder,
    /// Bytes of the events read so far.
    offset: u64,
    /// The tree depth of a `<user/>`: 3 under `<server-data><host>`, 2 in a `<host/>` file.
    user_depth: Option<usize>,
    host: Option<String>,
    /// Whether the root must be a `<host/>` (an included file).
    included: bool,
    ended: bool,
    /// Where the `<user/>` being read starts.
    user_start: Option<Position>,
}

/// A `<user/>` as read, with its host and where it started.
#[derive(Debug)]
pub struct UserElement {
    pub host: String,
    pub element: Element,
    pub position: Position,
}

/// The users of a document and of the files it includes, in document order.
pub struct Document {
    stack: Vec<Open>,
}

impl Document {
    pub fn open(path: &Path) -> Result<Document, ImportError> {
        Ok(Document {
            stack: vec![open_file(path, false)?],
        })
    }

    /// The next `<user/>`; `None` at the end of the document.
    pub fn next_user(&mut self) -> Result<Option<UserElement>, ImportError> {
        loop {
            let Some(file) = self.stack.last_mut() else {
                return Ok(None);
            };
            match file.step()? {
                Step::User(user) => return Ok(Some(user)),
                Step::Include(href, position) => {
                    if self.stack.len() > MAX_INCLUDE_DEPTH {
                        return Err(ImportError::at(&position, "xi:include nested too deeply"));
                    }
                    let base = position.file.parent().unwrap_or(Path::new("."));
                    let included = open_file(&base.join(&href), true)
                        .map_err(|e| ImportError::at(&position, format!("xi:include: {e}")))?;
                    self.stack.push(included);
                }
                Step::End => {
                    self.stack.pop();
                }
                Step::More => {}
            }
        }
    }
}

fn open_file(path: &Path, included: bool) -> Result<Open, ImportError> {
    let file = File::open(path).map_err(|e| ImportError::File {
        file: path.to_owned(),
        message: e.to_string(),
    })?;
    let lines = Lines {
        inner: BufReader::with_capacity(64 * 1024, file),
        consumed: 0,
        newlines: VecDeque::new(),
        passed: 0,
    };
    Ok(Open {
        path: path.to_owned(),
        parser: RawReader::new(lines),
        tree: TreeBuilder::new(),
        offset: 0,
        user_depth: None,
        host: None,
        included,
        ended: false,
        user_start: None,
    })
}

enum Step {
    User(UserElement),
    Include(String, Position),
    End,
    More,
}

impl Open {
    fn position(&mut self) -> Position {
        let offset = self.offset;
        Position {
            file: self.path.clone(),
            line: self.parser.inner_mut().line_at(offset),
        }
    }

    fn fail(&mut self, message: impl Into<String>) -> ImportError {
        ImportError::at(&self.position(), message)
    }

    fn step(&mut self) -> Result<Step, ImportError> {
        if self.ended {
            return Ok(Step::End);
        }
        let event = match self.parser.read() {
            Ok(Some(event)) => event,
            Ok(None) if self.tree.root.is_some() || self.user_depth.is_some() => {
                if self.tree.depth() > 0 {
                    return Err(self.fail("the document ends inside an element"));
                }
                self.ended = true;
                return Ok(Step::End);
            }
            Ok(None) => return Err(self.fail("the file holds no XML document")),
            Err(e) => {
                // The parser has consumed up to the error: name that line.
                let consumed = self.parser.inner().consumed;
                let line = self.parser.inner_mut().line_at(consumed);
                let position = Position {
                    file: self.path.clone(),
                    line,
                };
                return Err(ImportError::at(
                    &position,
                    format!("not well-formed XML: {e}"),
                ));
            }
        };
        let start = self.offset;
        let depth = self.tree.depth();
        let (is_foot, is_head_close, is_text) = match &event {
            RawEvent::ElementFoot(_) => (true, false, false),
            RawEvent::ElementHeadClose(_) => (false, true, false),
            RawEvent::Text(..) => (false, false, true),
            _ => (false, false, false),
        };
        let len = match &event {
            RawEvent::XmlDeclaration(m, _)
            | RawEvent::ElementHeadOpen(m, _)
            | RawEvent::Attribute(m, _, _)
            | RawEvent::ElementHeadClose(m)
            | RawEvent::ElementFoot(m)
            | RawEvent::Text(m, _) => m.len(),
        };
        // Whitespace between hosts and users is not kept: it would pile up in the tree.
        if is_text && self.user_depth.is_none_or(|d| depth < d) {
            if let RawEvent::Text(_, text) = &event {
                if !text.as_str().trim().is_empty() {
                    return Err(self.fail("text outside of a <user/>"));
                }
            }
            self.offset = start + len as u64;
            return Ok(Step::More);
        }
        self.tree
            .process_event(event)
            .map_err(|e| self.fail(format!("not namespace-well-formed XML: {e}")))?;
        let result = if is_head_close {
            self.opened(depth + 1)
        } else if is_foot {
            self.closed(depth)
        } else {
            Ok(Step::More)
        };
        self.offset = start + len as u64;
        result
    }

    /// An element at `depth` (1 for the root) was opened.
    fn opened(&mut self, depth: usize) -> Result<Step, ImportError> {
        let Some(el) = self.tree.top() else {
            return Ok(Step::More);
        };
        let (name, ns) = (el.name().to_owned(), el.ns());
        let host_jid = el.attr("jid").map(str::to_owned);
        let root_is_host = is_pie(el, "host");
        let root_is_server = is_pie(el, "server-data");
        let what = format!("<{name} xmlns='{ns}'>");
        match (depth, self.user_depth) {
            (1, _) if root_is_server && !self.included => self.user_depth = Some(3),
            (1, _) if root_is_host => {
                self.user_depth = Some(2);
                self.host = Some(host_jid.ok_or_else(|| self.fail("<host/> without 'jid'"))?);
            }
            (1, _) => {
                return Err(self.fail(format!(
                    "the root element is {what}, not XEP-0227's \
                     <server-data xmlns='{NS_PIE}'> or <host/>"
                )))
            }
            (2, Some(3)) if root_is_host => {
                self.host = Some(host_jid.ok_or_else(|| self.fail("<host/> without 'jid'"))?);
            }
            (2, Some(3)) if name == "include" && ns == NS_XINCLUDE => {}
            (2, Some(3)) => {
                return Err(self.fail(format!("{what} where a <host/> belongs")));
            }
            (d, Some(u)) if d == u => {
                if !is_pie(el, "user") {
                    return Err(self.fail(format!("{what} where a <user/> belongs")));
                }
                self.user_start = Some(self.position());
            }
            _ => {}
        }
        Ok(Step::More)
    }

    /// The element at `depth` was closed.
    fn closed(&mut self, depth: usize) -> Result<Step, ImportError> {
        match (depth, self.user_depth) {
            (d, Some(u)) if d == u => {
                let position = match self.user_start.take() {
                    Some(p) => p,
                    None => self.position(),
                };
                let element = self.take_child()?;
                let host = self.host.clone().unwrap_or_default();
                Ok(Step::User(UserElement {
                    host,
                    element,
                    position,
                }))
            }
            (2, Some(3)) => {
                let position = self.position();
                let child = self.take_child()?;
                if child.name() == "include" {
                    let href = child
                        .attr("href")
                        .ok_or_else(|| self.fail("xi:include without 'href'"))?;
                    return Ok(Step::Include(href.to_owned(), position));
                }
                self.host = None;
                Ok(Step::More)
            }
            _ => Ok(Step::More),
        }
    }

    fn take_child(&mut self) -> Result<Element, ImportError> {
        self.tree
            .unshift_child()
            .ok_or_else(|| self.fail("an element went missing while reading"))
    }
}
