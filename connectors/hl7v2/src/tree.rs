//! An owned, fully split and unescaped view of a message, for display and
//! serialization by the engine (which owns the serialization format).

use crate::message::Message;
use crate::segment::Segment;

/// One segment with all its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentView {
    pub id: String,
    /// 1-based position in the message.
    pub position: usize,
    pub fields: Vec<FieldView>,
}

/// One field, numbered as in HL7 (MSH-1 is the field separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldView {
    pub number: usize,
    /// The whole field, unescaped.
    pub value: String,
    pub repetitions: Vec<RepetitionView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepetitionView {
    pub value: String,
    pub components: Vec<ComponentView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentView {
    pub value: String,
    pub subcomponents: Vec<String>,
}

impl Message<'_> {
    /// Every segment, field, repetition, component and subcomponent, unescaped.
    pub fn tree(&self) -> Vec<SegmentView> {
        self.segments().map(|s| segment_view(&s)).collect()
    }
}

/// The view of one segment.
pub fn segment_view(segment: &Segment<'_>) -> SegmentView {
    SegmentView {
        id: segment.id().to_string(),
        position: segment.position(),
        fields: (1..=segment.field_count())
            .filter_map(|n| segment.field(n).map(|field| (n, field)))
            .map(|(number, field)| FieldView {
                number,
                value: field.value().into_owned(),
                repetitions: field
                    .repetitions()
                    .map(|rep| RepetitionView {
                        value: rep.value().into_owned(),
                        components: rep
                            .components()
                            .map(|comp| ComponentView {
                                value: comp.value().into_owned(),
                                subcomponents: comp
                                    .subcomponents()
                                    .map(|sub| sub.value().into_owned())
                                    .collect(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
