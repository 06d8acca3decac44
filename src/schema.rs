//! The table schemas jerex reads and writes. Each table is defined once, in `schemas/NAME.json`,
//! embedded at compile time: the readers, the output writers, `jerex schemas` and the README all
//! derive from those files, so the documentation cannot drift from the data.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// The input document table (id plus text or pre-tokenized sentences).
pub const DOCUMENTS_INPUT: &str = "documents_input";
/// One row per predicted mention.
pub const MENTIONS: &str = "mentions";
/// One row per predicted entity (coreference cluster).
pub const ENTITIES: &str = "entities";
/// One row per predicted relation.
pub const RELATIONS: &str = "relations";
/// One row per input document: status and counts.
pub const DOCUMENTS: &str = "documents";
/// One row per document an incremental run found new, changed or deleted.
pub const CHANGES: &str = "changes";
/// The documents an incremental job's knowledge base holds facts of (its state index).
pub const STATE: &str = "state";

/// The output tables a run writes, in the order of its reports' part counts.
pub const TABLES: [&str; 4] = [MENTIONS, ENTITIES, RELATIONS, DOCUMENTS];
/// The folder of an incremental job's runs in its output (`OUT/runs/<run>/<table>/`).
pub const RUNS_DIR: &str = "runs";

/// The embedded definitions, in documentation order (input first, then the outputs).
const SOURCES: [(&str, &str); 7] = [
    (
        DOCUMENTS_INPUT,
        include_str!("../schemas/documents_input.json"),
    ),
    (MENTIONS, include_str!("../schemas/mentions.json")),
    (ENTITIES, include_str!("../schemas/entities.json")),
    (RELATIONS, include_str!("../schemas/relations.json")),
    (DOCUMENTS, include_str!("../schemas/documents.json")),
    (CHANGES, include_str!("../schemas/changes.json")),
    (STATE, include_str!("../schemas/state.json")),
];

/// One column of a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// Type name: `utf8`, `bool`, `int32`, `int64`, `uint32`, `uint64`, `float32`, `float64`,
    /// `timestamp` (microseconds, UTC) or `list<T>` of any of these (nestable).
    pub data_type: String,
    pub nullable: bool,
    pub description: String,
}

impl Column {
    /// The Arrow type of the column.
    pub fn arrow_type(&self) -> DataType {
        parse_type(&self.data_type).unwrap_or_else(|e| {
            // The definitions are compiled in and checked by the tests below, so this is a bug.
            panic!("schema column {}: {e}", self.name)
        })
    }
}

/// A table definition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    pub name: String,
    pub description: String,
    /// Columns the rows of a written table are sorted by (empty for the input table).
    pub sort_key: Vec<String>,
    pub columns: Vec<Column>,
    #[serde(skip)]
    arrow: OnceLock<SchemaRef>,
}

impl TableSchema {
    /// The column called `name`, if any.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema (built once). Schema metadata records the table name and sort key so a
    /// written file says what it is.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow
            .get_or_init(|| {
                let fields: Vec<Field> = self
                    .columns
                    .iter()
                    .map(|c| Field::new(&c.name, c.arrow_type(), c.nullable))
                    .collect();
                let metadata = [
                    ("jerex.table".to_string(), self.name.clone()),
                    ("jerex.sort_key".to_string(), self.sort_key.join(",")),
                ]
                .into_iter()
                .collect();
                Arc::new(Schema::new_with_metadata(fields, metadata))
            })
            .clone()
    }

    /// Markdown section documenting the table.
    pub fn markdown(&self) -> String {
        let mut out = format!("### `{}`\n\n{}\n\n", self.name, self.description);
        if !self.sort_key.is_empty() {
            let key: Vec<String> = self.sort_key.iter().map(|k| format!("`{k}`")).collect();
            out.push_str(&format!("Sorted by {}.\n\n", key.join(", ")));
        }
        out.push_str("| column | type | nullable | description |\n|---|---|---|---|\n");
        for c in &self.columns {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                c.name,
                c.data_type.replace('<', "&lt;").replace('>', "&gt;"),
                if c.nullable { "yes" } else { "no" },
                c.description.replace('|', "\\|")
            ));
        }
        out
    }
}

fn all() -> &'static [TableSchema] {
    static TABLES: OnceLock<Vec<TableSchema>> = OnceLock::new();
    TABLES.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(name, json)| {
                let t: TableSchema = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("schemas/{name}.json: {e}"));
                assert_eq!(&t.name, name, "schemas/{name}.json names another table");
                t
            })
            .collect()
    })
}

/// Every table, input first.
pub fn tables() -> &'static [TableSchema] {
    all()
}

/// The table called `name` (one of the constants in this module).
///
/// # Panics
/// On an unknown name: table names are compile-time constants, so that is a bug in the caller.
pub fn table(name: &str) -> &'static TableSchema {
    all()
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no table schema named {name:?}"))
}

/// Markdown documentation of all tables (README, `jerex schemas`).
pub fn markdown() -> String {
    let sections: Vec<String> = all().iter().map(TableSchema::markdown).collect();
    sections.join("\n")
}

/// Parses a type name of the schema files into an Arrow type.
fn parse_type(s: &str) -> Result<DataType, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
        // Items are nullable because that is what arrow's ListBuilder produces: writers can build
        // arrays with the defaults and they match this schema exactly.
        return Ok(DataType::new_list(parse_type(inner)?, true));
    }
    Ok(match s {
        "utf8" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => return Err(format!("unknown data type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_schema_parses_and_builds() {
        assert_eq!(tables().len(), SOURCES.len());
        for t in tables() {
            assert!(!t.description.is_empty(), "{}", t.name);
            let schema = t.arrow_schema();
            assert_eq!(schema.fields().len(), t.columns.len(), "{}", t.name);
            assert_eq!(schema.metadata()["jerex.table"], t.name);
            let names: HashSet<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names.len(), t.columns.len(), "{}: duplicate column", t.name);
            for c in &t.columns {
                assert!(!c.description.is_empty(), "{}.{}", t.name, c.name);
            }
            for k in &t.sort_key {
                assert!(names.contains(k.as_str()), "{}: sort key {k}", t.name);
            }
        }
    }

    #[test]
    fn output_tables_are_sorted_by_doc_id_first() {
        for name in [MENTIONS, ENTITIES, RELATIONS, DOCUMENTS, CHANGES, STATE] {
            assert_eq!(table(name).sort_key[0], "doc_id", "{name}");
        }
    }

    #[test]
    fn types_map_to_arrow() {
        let m = table(MENTIONS).arrow_schema();
        assert_eq!(
            m.field_with_name("mention_id").unwrap().data_type(),
            &DataType::UInt32
        );
        assert!(m.field_with_name("char_start").unwrap().is_nullable());
        assert!(!m.field_with_name("doc_id").unwrap().is_nullable());
        let e = table(ENTITIES).arrow_schema();
        assert_eq!(
            e.field_with_name("mention_ids").unwrap().data_type(),
            &DataType::new_list(DataType::UInt32, true)
        );
        let input = table(DOCUMENTS_INPUT).arrow_schema();
        assert_eq!(
            input.field_with_name("sentences").unwrap().data_type(),
            &DataType::new_list(DataType::new_list(DataType::Utf8, true), true)
        );
        assert_eq!(
            parse_type("timestamp").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(parse_type("list<utf9>").is_err());
        assert!(parse_type("list<utf8").is_err());
    }

    #[test]
    fn list_builders_match_the_schema() {
        use arrow::array::{Array, ListBuilder, UInt32Builder};
        let mut b = ListBuilder::new(UInt32Builder::new());
        b.values().append_value(3);
        b.append(true);
        let arr = b.finish();
        let field = table(ENTITIES).arrow_schema();
        assert_eq!(
            arr.data_type(),
            field.field_with_name("mention_ids").unwrap().data_type()
        );
    }

    #[test]
    fn markdown_documents_every_column() {
        let md = markdown();
        for t in tables() {
            assert!(md.contains(&format!("### `{}`", t.name)));
            for c in &t.columns {
                assert!(md.contains(&format!("| `{}` |", c.name)), "{}", c.name);
            }
        }
        assert!(md.contains("list&lt;uint32&gt;"));
    }

    #[test]
    #[should_panic(expected = "no table schema")]
    fn unknown_table_panics() {
        table("nope");
    }
}
