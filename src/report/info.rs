//! `colstats info --format json`.

/// `colstats info --format json`: one object with the input(s), every HDF5 dataset (shape,
/// dtype, layout, chunks, filters, bytes, links), and for the chosen array its metadata and
/// plan, so that scripts need not parse the text.
pub fn info_json(info: &crate::Info) -> String {
    use serde_json::{json, Value};
    let datasets: Vec<Value> = info
        .datasets
        .iter()
        .map(|d| {
            json!({
                "path": d.path,
                "shape": d.shape,
                "dtype": d.dtype.as_ref().map(|t| t.name().to_string()).ok(),
                "unsupported": d.dtype.as_ref().err(),
                "layout": d.layout.name(),
                "chunks": d.chunk,
                "filters": d.filters.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                "stored_bytes": d.stored_bytes,
                "logical_bytes": d.logical_bytes,
                "links": d.links,
                "stored_in": d.holder,
            })
        })
        .collect();
    let files: Vec<String> = info
        .inputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut o = json!({
        "file": if files.len() == 1 { json!(files[0]) } else { json!(files) },
        "format": match info.format {
            crate::Format::Npy => "npy",
            crate::Format::Hdf5 => "HDF5",
        },
        "datasets": datasets,
        "dataset": info.dataset,
        "access": info.access,
        "domains": info.domains,
    });
    if let Some((m, p)) = &info.array {
        o["array"] = json!({
            "shape": m.shape,
            "dtype": m.dtype.name(),
            "descr": m.dtype.descr(),
            "order": m.order.name(),
            "rows": m.rows,
            "columns": m.columns,
            "bytes": m.data_bytes,
            "offset": if m.mapped && info.inputs.len() == 1 { json!(m.data_offset) } else { Value::Null },
        });
        o["plan"] = json!({
            "memory_budget": p.budget,
            "threads": info.threads,
            "blocks": p.blocks,
            "block_rows": p.block_shape.map(|b| b.0),
            "block_columns": p.block_shape.map(|b| b.1),
            "block_bytes": p.block_bytes,
            "groups": p.groups,
            "in_flight": p.in_flight,
            "leaf_rows": p.leaf_rows,
            "est_peak_memory": p.est_memory,
        });
    }
    let mut s = serde_json::to_string(&o).expect("serialisable");
    s.push('\n');
    s
}
