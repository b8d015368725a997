use std::path::Path;

use xmppd_personal::SqlitePersonal;
use xmppd_sasl::ScramKeys;
use xmppd_storage::SqliteStore;

use super::*;

const PASSWORD: &str = "correct horse battery staple";

fn hosts() -> Vec<String> {
    vec!["ej.example".to_owned()]
}

async fn stores() -> Stores {
    let sqlite = Arc::new(SqliteStore::open_in_memory().unwrap());
    let personal = SqlitePersonal::open(sqlite.clone()).await.unwrap();
    Stores {
        core: sqlite,
        personal: Arc::new(personal),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What `ejabberdctl export_piefxis` wrote for an account registered with [`PASSWORD`]: a
/// main file including one file per host, and every SCRAM value base64-encoded twice.
fn ejabberd_export(dir: &Path) -> PathBuf {
    write(
        dir,
        "20261207-052240_ej_example.xml",
        "<?xml version='1.0' encoding='UTF-8'?><host xmlns='urn:xmpp:pie:0' \
         xmlns:xi='http://www.w3.org/2001/XInclude' jid='ej.example'><user name='alice'>\
         <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
         <iter-count>4096</iter-count><salt>RUVKbGN0MU54aHdvVm9nSHJjY3hUZz09</salt>\
         <server-key>LzMranEwSWZubGpHRVcra0ZvRGNVS1lBQ2ZVPQ==</server-key>\
         <stored-key>UG9VMDA0TzRIZ29RK3hmdFNsSG4zaGVRZThRPQ==</stored-key>\
         </scram-credentials><offline-messages><message to='alice@ej.example' \
         from='bob@ej.example' type='chat' id='2571789384342962494' xmlns='jabber:client'>\
         <delay from='ej.example' stamp='2026-12-07T05:22:39.308930Z' xmlns='urn:xmpp:delay'>\
         Offline storage</delay><body>hello offline</body></message></offline-messages>\
         <vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard><query xmlns='jabber:iq:roster'>\
         <item subscription='both' name='Bobby' jid='bob@ej.example'><group>Friends</group>\
         </item></query><query xmlns='jabber:iq:private'><note xmlns='x:notes'>secret</note>\
         </query></user><user name='bob' password='plain secret'/></host>",
    );
    write(
        dir,
        "20261207-052240.xml",
        "<?xml version='1.0' encoding='UTF-8'?><server-data xmlns='urn:xmpp:pie:0' \
         xmlns:xi='http://www.w3.org/2001/XInclude'>\
         <xi:include href='20261207-052240_ej_example.xml'/></server-data>",
    )
}

#[test]
fn an_ejabberd_export_is_read_through_its_include_with_its_double_base64() {
    let dir = tempfile::tempdir().unwrap();
    let main = ejabberd_export(dir.path());
    let mut accounts = Vec::new();
    read_all(&main, &hosts(), |a| {
        accounts.push(a);
        Ok(())
    })
    .unwrap();
    assert_eq!(accounts.len(), 2);
    let alice = &accounts[0];
    assert_eq!(alice.user, UserRef::new("alice", "ej.example"));
    let Secret::Scram(keys) = &alice.secret else {
        panic!("SCRAM keys expected")
    };
    assert_eq!(keys.len(), 1);
    let sha1 = xmppd_auth::from_stored(keys[0].clone()).unwrap();
    assert_eq!(sha1.alg, HashAlg::Sha1);
    assert!(sha1.verify_password(PASSWORD));
    assert_eq!(alice.roster.len(), 1);
    assert_eq!(alice.roster[0].jid, "bob@ej.example");
    assert_eq!(alice.roster[0].groups, ["Friends"]);
    assert_eq!(alice.private[0].0, "x:notes");
    assert!(alice.vcard.as_deref().unwrap().contains("Alice Liddell"));
    let (stamp, xml) = &alice.offline[0];
    assert_eq!(*stamp, Some(1_796_620_959_308));
    assert!(xml.contains("hello offline"));
    assert_eq!(accounts[1].secret, Secret::Password("plain secret".into()));
}

/// The error of importing `doc` as one file.
fn error_of(doc: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "in.xml", doc);
    let err = check(&path, &hosts()).expect_err("malformed").to_string();
    err.replace(&dir.path().display().to_string(), "DIR")
}

#[test]
fn malformed_documents_are_refused_with_file_line_and_what() {
    let head = "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='ej.example'>\n";
    let err = error_of(&format!(
        "{head}<user name='a' password='p'>\n<query x='1'>"
    ));
    assert!(err.starts_with("DIR/in.xml:4: "), "{err}");
    assert_eq!(
        error_of(&format!("{head}<person name='a'/></host></server-data>")),
        "DIR/in.xml:3: <person xmlns='urn:xmpp:pie:0'> where a <user/> belongs"
    );
    assert_eq!(
        error_of(&format!("{head}\n<user name='a'/></host></server-data>")),
        "DIR/in.xml:4: user \"a\": neither a password nor SCRAM credentials"
    );
    let bad_key = "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
        <iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>!!</server-key>\
        <stored-key>AAAA</stored-key></scram-credentials>";
    assert!(error_of(&format!(
        "{head}<user name='a'>{bad_key}</user></host></server-data>"
    ))
    .starts_with("DIR/in.xml:3: user \"a\": SCRAM-SHA-1: <server-key/> is not base64"),);
    assert_eq!(
        error_of(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='elsewhere.example'>\
             <user name='a' password='p'/></host></server-data>"
        ),
        "DIR/in.xml:1: host \"elsewhere.example\" is not served here (server.hosts: ej.example)"
    );
    assert_eq!(
        error_of("<roster xmlns='jabber:iq:roster'/>"),
        "DIR/in.xml:1: the root element is <roster xmlns='jabber:iq:roster'>, not XEP-0227's \
         <server-data xmlns='urn:xmpp:pie:0'> or <host/>"
    );
    assert!(error_of(&format!(
        "{head}<user name='a' password='p'><query xmlns='jabber:iq:roster'>\
         <item jid='@@'/></query></user></host></server-data>"
    ))
    .starts_with("DIR/in.xml:3: user \"a\": roster: item \"@@\""));
}

#[tokio::test]
async fn import_export_and_import_again_give_the_same_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let main = ejabberd_export(dir.path());
    let first = stores().await;
    let counts = import(&main, &hosts(), &first, Existing::Skip)
        .await
        .unwrap();
    assert_eq!(
        (
            counts.accounts,
            counts.roster_items,
            counts.vcards,
            counts.private,
            counts.offline
        ),
        (2, 1, 1, 1, 1)
    );
    // A second run skips what is there, and duplicates nothing.
    let again = import(&main, &hosts(), &first, Existing::Skip)
        .await
        .unwrap();
    assert_eq!((again.accounts, again.existing, again.offline), (0, 2, 0));

    let out = dir.path().join("out");
    let (files, n) = export(&out, &hosts(), &first).await.unwrap();
    assert_eq!((files, n), (vec![out.join("ej.example.xml")], 2));
    let second = stores().await;
    let counts = import(
        &out.join("ej.example.xml"),
        &hosts(),
        &second,
        Existing::Skip,
    )
    .await
    .unwrap();
    assert_eq!(counts.accounts, 2);
    for name in ["alice", "bob"] {
        let user = UserRef::new(name, "ej.example");
        let (a, b) = (
            read_account(&first, &user).await.unwrap(),
            read_account(&second, &user).await.unwrap(),
        );
        assert_eq!(a, b, "{name}");
    }
    // bob's password became keys for every hash, and nothing else.
    let bob = read_account(&second, &UserRef::new("bob", "ej.example"))
        .await
        .unwrap();
    let Secret::Scram(keys) = bob.secret else {
        panic!()
    };
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert!(xmppd_auth::from_stored(k)
            .unwrap()
            .verify_password("plain secret"));
    }
}

#[tokio::test]
async fn replace_overwrites_present_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let target = stores().await;
    let user = UserRef::new("alice", "ej.example");
    let old = ScramKeys::generate(HashAlg::Sha256, "old", 64).unwrap();
    (target
        .core
        .create_user(&user, &[xmppd_auth::to_stored(&old)])
        .await)
        .unwrap();
    let stale = xmppd_storage::RosterItem {
        jid: "stale@ej.example".into(),
        ..Default::default()
    };
    target.core.set_roster_item(&user, &stale).await.unwrap();
    let main = ejabberd_export(dir.path());
    let counts = import(&main, &hosts(), &target, Existing::Replace)
        .await
        .unwrap();
    assert_eq!(
        (counts.accounts, counts.replaced, counts.offline),
        (1, 1, 0)
    );
    let alice = read_account(&target, &user).await.unwrap();
    let jids: Vec<_> = alice.roster.iter().map(|i| i.jid.as_str()).collect();
    assert_eq!(jids, ["bob@ej.example"]);
    let Secret::Scram(keys) = alice.secret else {
        panic!()
    };
    assert_eq!(keys.len(), 1);
    assert!(xmppd_auth::from_stored(keys[0].clone())
        .unwrap()
        .verify_password(PASSWORD));
}

#[test]
fn prosody_style_documents_and_what_is_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "p.xml",
        "<server-data xmlns='urn:xmpp:pie:0'>\n  <host jid='ej.example'>\n    <user name='carol'>\
         <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
         <server-key>LzMranEwSWZubGpHRVcra0ZvRGNVS1lBQ2ZVPQ==</server-key>\
         <stored-key>UG9VMDA0TzRIZ29RK3hmdFNsSG4zaGVRZThRPQ==</stored-key>\
         <iter-count>4096</iter-count><salt>RUVKbGN0MU54aHdvVm9nSHJjY3hUZz09</salt>\
         </scram-credentials>\
         <presence xmlns='jabber:client' type='subscribe' from='dave@ej.example'/>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='a'/><items node='b'/>\
         </pubsub></user>\n  </host>\n</server-data>\n",
    );
    let mut accounts = Vec::new();
    read_all(&path, &hosts(), |a| {
        accounts.push(a);
        Ok(())
    })
    .unwrap();
    let carol = &accounts[0];
    assert_eq!(carol.pending[0].0, "dave@ej.example");
    assert_eq!(carol.skipped.get("PEP nodes' items"), Some(&2));
}
