//! Checkpoints: named tensors (variables) in a safetensors file.
//!
//! Tensor names are variable node names (`conv1/weights`,
//! `conv1/weights_quant/min`, ...), so a checkpoint written from one graph
//! restores into another graph built with the same names. Quantization
//! parameters, when a tensor has them, travel in the file's metadata under
//! `quant:<name>` as JSON.

use crate::dtype::DType;
use crate::error::IoError;
use crate::tensor::{QuantParams, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Variables by name.
pub type Checkpoint = BTreeMap<String, Tensor>;

const QUANT_PREFIX: &str = "quant:";

fn to_st(dtype: DType) -> Option<StDtype> {
    Some(match dtype {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::U8 => StDtype::U8,
        DType::I8 => StDtype::I8,
        DType::Bool => StDtype::BOOL,
        DType::String | DType::Resource => return None,
    })
}

fn from_st(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        StDtype::I8 => DType::I8,
        StDtype::BOOL => DType::Bool,
        _ => return None,
    })
}

struct View<'a> {
    dtype: StDtype,
    tensor: &'a Tensor,
}

impl safetensors::View for View<'_> {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.tensor.to_le_bytes())
    }
    fn data_len(&self) -> usize {
        self.tensor.len() * self.tensor.dtype().size_of().unwrap_or(0)
    }
}

/// Encodes a checkpoint as safetensors bytes.
pub fn to_bytes(checkpoint: &Checkpoint) -> Result<Vec<u8>, String> {
    let mut views = Vec::with_capacity(checkpoint.len());
    let mut metadata = HashMap::new();
    for (name, tensor) in checkpoint {
        let dtype = to_st(tensor.dtype())
            .ok_or_else(|| format!("tensor '{name}': dtype {} cannot be saved", tensor.dtype()))?;
        views.push((name.clone(), View { dtype, tensor }));
        if let Some(q) = tensor.quant() {
            let json = serde_json::to_string(q).map_err(|e| format!("tensor '{name}': {e}"))?;
            metadata.insert(format!("{QUANT_PREFIX}{name}"), json);
        }
    }
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).map_err(|e| e.to_string())
}

/// Decodes safetensors bytes into a checkpoint.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let quant = header.metadata().clone().unwrap_or_default();
    let mut out = Checkpoint::new();
    for (name, view) in file.tensors() {
        out.insert(
            name.clone(),
            tensor_from_view(&name, &view, quant.get(&format!("{QUANT_PREFIX}{name}")))?,
        );
    }
    Ok(out)
}

fn tensor_from_view(
    name: &str,
    view: &TensorView<'_>,
    quant: Option<&String>,
) -> Result<Tensor, String> {
    let dtype = from_st(view.dtype())
        .ok_or_else(|| format!("tensor '{name}': unsupported dtype {:?}", view.dtype()))?;
    let mut tensor = Tensor::from_le_bytes(dtype, view.shape(), view.data())
        .map_err(|e| format!("tensor '{name}': {e}"))?;
    if let Some(json) = quant {
        let q: QuantParams = serde_json::from_str(json)
            .map_err(|e| format!("tensor '{name}': bad quantization metadata: {e}"))?;
        tensor
            .set_quant(Some(q))
            .map_err(|e| format!("tensor '{name}': {e}"))?;
    }
    Ok(tensor)
}

/// Writes a checkpoint to a safetensors file.
pub fn write(path: &Path, checkpoint: &Checkpoint) -> Result<(), IoError> {
    let bytes = to_bytes(checkpoint).map_err(|message| IoError::Format {
        path: path.to_path_buf(),
        message,
    })?;
    std::fs::write(path, bytes).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a checkpoint from a safetensors file.
pub fn read(path: &Path) -> Result<Checkpoint, IoError> {
    let bytes = super::read_file(path)?;
    from_bytes(&bytes).map_err(|message| IoError::Format {
        path: path.to_path_buf(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_dtype_with_quant_params() {
        let mut ck = Checkpoint::new();
        ck.insert(
            "w".into(),
            Tensor::from_vec(&[2, 2], vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.0]).unwrap(),
        );
        ck.insert("d".into(), Tensor::from_vec(&[1], vec![0.1f64]).unwrap());
        ck.insert("step".into(), Tensor::scalar(7i64));
        ck.insert(
            "i".into(),
            Tensor::from_vec(&[3], vec![-1i32, 0, 1]).unwrap(),
        );
        ck.insert(
            "b".into(),
            Tensor::from_vec(&[2], vec![true, false]).unwrap(),
        );
        let q = QuantParams {
            scales: vec![0.5, 0.25],
            zero_points: vec![0, 0],
            axis: Some(0),
        };
        ck.insert(
            "q".into(),
            Tensor::from_vec(&[2], vec![-3i8, 4])
                .unwrap()
                .with_quant(q)
                .unwrap(),
        );
        ck.insert(
            "u".into(),
            Tensor::from_vec(&[0], Vec::<u8>::new()).unwrap(),
        );
        let back = from_bytes(&to_bytes(&ck).unwrap()).unwrap();
        assert_eq!(back, ck);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(from_bytes(b"definitely not safetensors").is_err());
        assert!(from_bytes(&[]).is_err());
    }
}
