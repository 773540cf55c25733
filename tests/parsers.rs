//! Bad input never panics: property tests over every API response parser (CamInvoice and
//! OnlinePajak) and the config parser — arbitrary bytes, arbitrary JSON, and valid answers
//! with unknown fields and unknown enum values, which must be ignored and carried through.

use pollhook::config::Config;
use pollhook::providers::caminvoice::model::{self as ci, DocState, Side};
use pollhook::providers::caminvoice::token::parse_refresh;
use pollhook::providers::onlinepajak::api::ApiMap;
use pollhook::providers::onlinepajak::model::{self as op, Invoice, InvoiceState};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        // the keys and values the parsers look for, so that shapes get close to real ones
        prop::sample::select(vec![
            "document_id",
            "updated_at",
            "status",
            "2024-03-07T07:16:07.859Z",
            "APPROVED",
            "SEND",
            "data",
            "content"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "document_id",
                    "updated_at",
                    "type",
                    "status",
                    "documents",
                    "data",
                    "pagination",
                    "total_pages",
                    "token",
                    "access_token",
                    "expire_in",
                    "expireIn",
                    "content",
                    "totalPages",
                    "id",
                    "approvalStatus",
                    "revision",
                    "updatedAt",
                    "error",
                    "errors",
                    "message",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn every_parser(body: &[u8]) {
    let map = ApiMap::default();
    let _ = ci::poll_items(body);
    let _ = ci::detail(body);
    let _ = ci::list_page(body);
    let _ = ci::error_body(body);
    let _ = parse_refresh(body, 1_700_000_000_000);
    let _ = op::page(body, &map);
    let _ = op::retrieved(body, &map);
    let _ = op::error_text(body);
    let _ = Invoice::parse(body, &map);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        every_parser(&body);
    }

    #[test]
    fn no_parser_panics_on_arbitrary_json(v in any_json()) {
        every_parser(v.to_string().as_bytes());
    }

    #[test]
    fn no_parser_panics_on_truncated_answers(v in any_json(), cut in 0usize..400) {
        let text = v.to_string();
        every_parser(&text.as_bytes()[..cut.min(text.len())]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_statuses_carried(
        status in "[A-Z_]{1,24}|.{0,16}",
        extra_key in "[a-z_]{1,12}",
        extra in any_json(),
        wrapped in any::<bool>(),
    ) {
        let mut item = json!({"document_id": "d1", "updated_at": "2024-03-07T07:16:07.859Z", "type": "SEND"});
        item[&extra_key] = extra.clone();
        let item = if extra_key == "document_id" || extra_key == "updated_at" || extra_key == "type" { json!({"document_id": "d1", "updated_at": "2024-03-07T07:16:07.859Z", "type": "SEND"}) } else { item };
        let body = if wrapped { json!({"documents": [item], "note": extra.clone()}) } else { json!([item]) };
        let answer = ci::poll_items(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(answer.items.len(), 1);
        prop_assert_eq!(answer.unusable.count, 0);
        prop_assert_eq!(answer.items[0].side, Some(Side::Send));

        let mut detail = json!({"document_id": "d1", "status": status.clone(), "supplier_id": "K"});
        if !matches!(extra_key.as_str(), "document_id" | "status" | "supplier_id") {
            detail[&extra_key] = extra;
        }
        let d = ci::detail(detail.to_string().as_bytes()).unwrap();
        let want = if status.is_empty() { None } else { Some(status.clone()) };
        prop_assert_eq!(d.status.clone(), want);
        let state = DocState { side: Side::Receive, status: status.clone(), updated_at: 5 };
        prop_assert_eq!(DocState::decode(&state.encode()), Some(state));
        let inv = InvoiceState { status: status.clone(), revision: -3, document_type: status, updated_at: 9 };
        prop_assert_eq!(InvoiceState::decode(&inv.encode()), Some(inv));
    }

    #[test]
    fn the_config_parser_never_panics(text in ".{0,300}") {
        let _ = Config::parse(&text, "fuzz.toml".as_ref());
    }

    #[test]
    fn a_damaged_example_config_fails_cleanly_with_a_location(cut in 0usize..4000, junk in "[=\\[\\]\"{}a-z ]{1,3}") {
        let example = include_str!("../config.toml.example");
        let at = example.char_indices().map(|(i, _)| i).nth(cut % example.chars().count()).unwrap_or(0);
        let damaged = format!("{}{}{}", &example[..at], junk, &example[at..]);
        if let Err(e) = Config::parse(&damaged, "damaged.toml".as_ref()) {
            let text = e.to_string();
            prop_assert!(text.starts_with("damaged.toml"));
            prop_assert!(text.contains("help: "), "{}", text);
        }
    }
}
