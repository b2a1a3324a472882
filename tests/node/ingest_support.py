"""The administrative-penalty CSV mapping that ingest tests, e2e tests and their fixtures feed to
`credex ingest` (docs/mapping.md): one text, so a catalogue change to the item is made once."""

from __future__ import annotations

from node.demo_data import numbered_uscc

_PENALTY_FIELDS = {
    "subject_name": '"name"',
    "subject_category": '{ const = "法人及非法人组织" }',
    "uscc": '"uscc"',
    "legal_rep_name": '{ const = "王某某" }',
    "decision_no": '"decision_no"',
    "violation_type": '{ const = "销售不合格产品" }',
    "violation_facts": '{ const = "经查，当事人销售的产品经抽检不合格。" }',
    "legal_basis": '{ const = "《中华人民共和国产品质量法》第四十九条" }',
    "penalty_types": '{ const = "罚款" }',
    "penalty_content": '{ const = "罚款" }',
    "fine_wan_yuan": '"fine"',
    "decision_date": '"date"',
    "penalty_valid_until": '{ const = "2099-12-31" }',
    "authority_name": '{ const = "淄博市张店区市场监督管理局" }',
    "authority_uscc": f'{{ const = "{numbered_uscc("11370303", 1)}" }}',
    "severity": '{ const = "一般" }',
    "source_unit": '{ const = "淄博市张店区市场监督管理局" }',
    "source_unit_uscc": f'{{ const = "{numbered_uscc("11370303", 2)}" }}',
}


def penalty_mapping(path: str = "penalties.csv", **fields: str) -> str:
    """The TOML mapping of a CSV export at `path` (relative to the mapping) to `admin_penalty`.

    By default it reads the columns name, uscc, decision_no, fine and date and gives every other
    field a valid constant (a general-severity penalty by a Zibo district authority). `fields`
    replaces a field's TOML value as written (`decision_no='"no"'`,
    `fine_wan_yuan='{ const = "1.5" }'`); a name that is not a default field is refused, so a
    typo cannot silently leave the default in place."""
    unknown = sorted(set(fields) - set(_PENALTY_FIELDS))
    if unknown:
        raise ValueError(f"not an admin_penalty mapping field: {', '.join(unknown)}")
    header = ['item = "admin_penalty"', "", "[source]", 'kind = "csv"', f'path = "{path}"', ""]
    body = [f"{name} = {value}" for name, value in {**_PENALTY_FIELDS, **fields}.items()]
    return "\n".join([*header, "[fields]", *body]) + "\n"
