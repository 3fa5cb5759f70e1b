"""The CheXpert labeler on sentence shapes seen in real reports (sentences written here, not copied), and
its agreement with human MeSH coding when ../shared/data is present."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from eval.labeler import ABNORMAL, OBSERVATIONS, PHRASES, STANDARD_FIVE, label, load_phrases, split_sentences
from radreport.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"  # as tests/conftest.py


def positives(text):
    """Observations with a label (positive, negative or uncertain)."""
    return {k: v for k, v in label(text).items() if v}


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "No pleural effusion or pneumothorax.",
            {"Pleural Effusion": "negative", "Pneumothorax": "negative", "No Finding": "positive"},
        ),
        ("Small left pleural effusion. No pneumothorax.", {"Pleural Effusion": "positive", "Pneumothorax": "negative"}),
        (
            "Right lower lobe opacity may represent atelectasis or pneumonia.",
            {"Lung Opacity": "positive", "Atelectasis": "uncertain", "Pneumonia": "uncertain"},
        ),
        ("Moderate cardiomegaly with mild pulmonary edema.", {"Cardiomegaly": "positive", "Edema": "positive"}),
        ("The pneumothorax has resolved.", {"Pneumothorax": "negative", "No Finding": "positive"}),
        (
            "Heart is mildly enlarged, but there is no effusion.",
            {"Cardiomegaly": "positive", "Pleural Effusion": "negative"},
        ),
        (
            "Endotracheal tube in standard position. No acute cardiopulmonary process.",
            {"Support Devices": "positive", "No Finding": "positive"},
        ),
        (
            "Consolidation concerning for pneumonia; pneumothorax cannot be excluded.",
            {"Consolidation": "positive", "Pneumonia": "uncertain", "Pneumothorax": "uncertain"},
        ),
        ("Acute right sixth rib fracture without pneumothorax.", {"Fracture": "positive", "Pneumothorax": "negative"}),
    ],
)
def test_crafted_sentences(text, expected):
    assert positives(text) == expected


# --- the causes of disagreement with human coding, one shape each ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax. There is marked cardiomegaly.",
        "no pneumothorax. there is marked cardiomegaly.",  # lower-cased text still splits into sentences
        "No pneumothorax.There is marked cardiomegaly.",  # no space after the period
        "No pneumothorax\nThere is marked cardiomegaly",
    ],
)
def test_negation_stays_in_its_sentence(text):
    states = label(text)
    assert (states["Pneumothorax"], states["Cardiomegaly"]) == ("negative", "positive")


def test_sentence_split_keeps_abbreviations_and_splits_lower_case():
    assert split_sentences("Atelectasis vs. pneumonia. no effusion. Seen by Dr. Smith.") == [
        "Atelectasis vs. pneumonia.",
        "no effusion.",
        "Seen by Dr. Smith.",
    ]


@pytest.mark.parametrize(
    "text,observation",
    [
        ("Findings are consistent with mild bibasilar atelectasis.", "Support Devices"),  # stent in consistent
        ("Persistent small left pleural effusion.", "Support Devices"),  # stent in persistent
        ("Findings may reflect impaired lymphatic drainage.", "Support Devices"),  # drain in drainage
        ("Nonspecific enlargement of the left axillary nodes.", "Cardiomegaly"),
        ("The mass effect on the trachea is unchanged.", "Lung Lesion"),
    ],
)
def test_patterns_respect_word_boundaries(text, observation):
    assert label(text)[observation] is None


@pytest.mark.parametrize(
    "text",
    [
        "No acute radiographic cardiopulmonary process.",
        "No evidence of active disease.",
        "Negative for acute abnormality.",
        "Lungs are clear. Heart size is normal.",
        "The heart is top normal in size. The lungs are clear.",  # "top normal" is normal
        "Heart size is at the upper limits of normal. No focal consolidation.",
    ],
)
def test_normal_phrasings_are_no_finding(text):
    states = label(text)
    assert states["No Finding"] == "positive"
    assert not any(states[o] in ("positive", "uncertain") for o in ABNORMAL)


@pytest.mark.parametrize(
    "text,observation",
    [
        ("There is a small amount of pleural fluid on the right.", "Pleural Effusion"),
        ("Stable cardiac enlargement.", "Cardiomegaly"),
        ("Enlarged cardiomediastinal silhouette, unchanged.", "Cardiomegaly"),
        ("The cardiac silhouette is moderately enlarged.", "Cardiomegaly"),
        ("Borderline heart size.", "Cardiomegaly"),
        ("Mild pulmonary vascular congestion.", "Edema"),
        ("Central pulmonary vascularity is accentuated.", "Edema"),
        ("Worsening congestive heart failure.", "Edema"),
        ("Widened superior mediastinum.", "Enlarged Cardiomediastinum"),
        ("Bilateral apical pleural thickening.", "Pleural Other"),
        ("Biapical pleural-parenchymal scarring.", "Pleural Other"),
        ("Increased interstitial markings in both lung bases.", "Lung Opacity"),
        ("Right middle lobe airspace disease.", "Lung Opacity"),
        ("A 9 mm noncalcified nodule in the left lower lobe.", "Lung Lesion"),
        ("Left chest wall pacemaker with leads in the right heart.", "Support Devices"),
        ("Right internal jugular central venous catheter tip in the SVC.", "Support Devices"),
        ("Right-sided chest drain in place.", "Support Devices"),
    ],
)
def test_phrasings_found(text, observation):
    assert label(text)[observation] == "positive"


@pytest.mark.parametrize(
    "text,observation",
    [
        ("Calcified nodule in the left upper lobe, consistent with old granulomatous disease.", "Lung Lesion"),
        ("Small calcified granuloma in the right lung base.", "Lung Lesion"),
        ("Small pericardial effusion.", "Pleural Effusion"),
        ("Residua of prior granulomatous infection.", "Pneumonia"),
        ("Fracture of the central venous catheter near the clavicle.", "Fracture"),
    ],
)
def test_look_alikes_are_not_the_observation(text, observation):
    assert label(text)[observation] is None


def test_calcified_granuloma_is_not_normal_either():
    states = label("Calcified granuloma in the right upper lobe. No acute disease.")
    assert states["Lung Lesion"] is None and states["No Finding"] is None


@pytest.mark.parametrize(
    "text,observation,state",
    [
        ("No significant change in the small right apical pneumothorax.", "Pneumothorax", "positive"),
        ("No interval change in the moderate left pleural effusion.", "Pleural Effusion", "positive"),
        ("No focal airspace opacity to suggest pneumonia.", "Pneumonia", "negative"),
        ("No pleural effusion, mild bibasilar atelectasis.", "Atelectasis", "positive"),
        ("Lungs are clear without effusion, with stable cardiomegaly.", "Cardiomegaly", "positive"),
        ("No pneumothorax and the heart is enlarged.", "Cardiomegaly", "positive"),
        ("The heart is not enlarged.", "Cardiomegaly", "negative"),
        ("The previously seen effusion is no longer visualized.", "Pleural Effusion", "negative"),
        ("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.", "Lung Lesion", "negative"),
        ("Chest tube has been removed.", "Support Devices", "negative"),
        ("Cannot exclude a small left effusion.", "Pleural Effusion", "uncertain"),
        ("Can not exclude early pneumonia.", "Pneumonia", "uncertain"),
        ("A small effusion is not excluded.", "Pleural Effusion", "uncertain"),
    ],
)
def test_negation_scope(text, observation, state):
    assert label(text)[observation] == state


def test_other_findings_make_a_report_not_normal_and_nothing_else():
    states = label("Degenerative changes of the thoracic spine. Hyperexpanded lungs. No acute disease.")
    assert states["No Finding"] is None
    assert not any(states[o] in ("positive", "uncertain") for o in OBSERVATIONS)


def test_empty_text_has_no_labels():
    assert set(label("  ").values()) == {None}


def test_observation_groups():
    assert len(ABNORMAL) == 12 and "No Finding" not in ABNORMAL and "Support Devices" not in ABNORMAL
    assert set(STANDARD_FIVE) <= set(ABNORMAL)


def test_labeler_recovers_synthetic_labels():
    """The generator knows each study's true labels: the labeler must agree on most of them."""
    import random

    from train.synthetic import make_study

    r = random.Random(1)
    agree = total = 0
    for _ in range(300):
        s = make_study(r)
        got = label(" ".join(s.impression))
        for obs, state in s.labels.items():
            total += 1
            agree += (got[obs] in ("positive", "uncertain")) == (state in ("positive", "uncertain"))
    assert agree / total > 0.95


# --- agreement with human coding (bench/labeler_agreement.py) ------------------------------------------------


def _bench():
    spec = importlib.util.spec_from_file_location("labeler_agreement", ROOT / "bench" / "labeler_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "term,others,expected",
    [
        ("Pulmonary Atelectasis/base/left", [], {"Atelectasis"}),
        ("Cardiac Shadow/enlarged/mild", [], {"Cardiomegaly"}),
        ("Cardiac Shadow/irregular", [], set()),
        ("Pulmonary Congestion/mild", [], {"Edema"}),
        ("Opacity/lung/upper lobe/left/round", [], {"Lung Opacity", "Lung Lesion"}),
        ("Opacity/ribs/left", [], set()),
        ("Density/lung/base/left/round", [], {"Lung Lesion"}),
        ("Cicatrix/pleura/apex/left", [], {"Pleural Other"}),
        ("Nodule/lung/upper lobe/right/small", ["Calcinosis/lung/upper lobe/right/small"], set()),
        ("Nodule/lung/upper lobe/right", ["Calcinosis/aorta"], {"Lung Lesion"}),
        ("Calcified Granuloma/lung/lingula", [], set()),
        ("Mediastinum/lymph nodes/enlarged", [], set()),
        ("Hydropneumothorax/left/large", [], {"Pleural Effusion", "Pneumothorax"}),
        ("Spondylosis/thoracic vertebrae", [], set()),
    ],
)
def test_mesh_mapping(term, others, expected):
    assert _bench().map_term(term, others) == expected


def test_agreement_measure_on_hand_made_pairs():
    bench = _bench()
    pairs = [
        ("1", "Small left pleural effusion.", "Pleural Effusion/left/small"),
        ("2", "No acute disease.", "normal"),
        ("3", "Mild cardiomegaly. No effusion.", "Cardiomegaly/mild;Pleural Effusion/right"),  # one missed
        ("4", "Lungs are clear.", "Spondylosis"),  # not normal to the coders, normal to the labeler
    ]
    r = bench.measure(pairs)
    assert r["per_observation"]["Pleural Effusion"]["recall"] == pytest.approx(0.5)
    assert r["per_observation"]["Cardiomegaly"]["f1"] == pytest.approx(1.0)
    assert r["micro_f1_standard_five"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert r["no_finding"]["both"] == 1 and r["no_finding"]["labeler_only"] == 1
    assert r["no_finding"]["agreement_with_mesh_normal"] == pytest.approx(3 / 4)


@pytest.mark.skipif(not (SHARED_DATA / "iu-xray" / "mesh.csv").is_file(), reason="needs ../shared/data/iu-xray")
def test_agreement_with_human_coding_meets_the_targets():
    bench = _bench()
    r = bench.measure(bench.load_pairs(SHARED_DATA / "iu-xray" / "train.json", SHARED_DATA / "iu-xray" / "mesh.csv"))
    assert r["reports"] == 1147
    assert r["micro_f1_standard_five"] >= 0.90
    assert r["micro_f1_abnormal"] >= 0.85
    assert r["no_finding"]["agreement_with_mesh_normal"] >= 0.90


# ---- the vocabulary file (eval/phrases.yaml)


def write_phrases(tmp_path, **changes):
    data = yaml.safe_load(PHRASES.read_text())
    data.update(changes)
    path = tmp_path / "phrases.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_packaged_vocabulary_loads_with_every_fragment_filled_in():
    mentions, not_mentions, other = load_phrases()
    assert set(mentions) == set(OBSERVATIONS) - {"No Finding"}
    assert set(not_mentions) <= set(mentions) and other
    assert not any(re.search(r"<[A-Z_]+>", p) for ps in mentions.values() for p in ps)
    assert any("cardiac (?:silhouette" in p for p in mentions["Cardiomegaly"])  # <HEART> filled in


def test_a_bad_vocabulary_names_every_entry_that_is_wrong(tmp_path):
    path = write_phrases(
        tmp_path,
        mentions={"Edema": ["edema", "(unclosed", "<NOPE> congestion"], "No Finding": ["normal"], "Edemaa": ["x"]},
        other_findings="emphysema",
    )
    with pytest.raises(InputError) as e:
        load_phrases(path)
    message = str(e.value)
    assert message.startswith(f"{path}: 6 problem(s)")
    for needle in (
        "mentions.Edema[1]: not a regular expression: missing ), unterminated subpattern",
        "mentions.Edema[2]: no fragment named NOPE",
        "mentions.No Finding: not one of the CheXpert observations a text mentions",
        "mentions.Edemaa: not one of the CheXpert observations a text mentions",
        "other_findings: must be a list of non-empty regular expressions",
        "mentions: no entry for Atelectasis, Cardiomegaly,",
    ):
        assert needle in message, message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("mentions: {}\n", "must be a mapping with exactly the keys fragments, mentions, not_mentions, other_findings"),
        ("- a\n", "must be a mapping with exactly the keys"),
        ("mentions: [\n", "while parsing a flow"),
    ],
)
def test_a_vocabulary_file_that_is_not_one_is_refused_by_name(tmp_path, text, problem):
    path = tmp_path / "phrases.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(f"{path}: ")) as e:
        load_phrases(path)
    assert problem in str(e.value)


def test_a_vocabulary_that_would_label_less_than_it_says_is_refused(tmp_path):
    mentions = yaml.safe_load(PHRASES.read_text())["mentions"]
    del mentions["Edema"]  # every edema would go unlabelled, and the report would count as normal
    fragments = {"GAP": "(?:[\\w-]+\\s+){0,4}?", "HEART": "heart <GAP>", "BROKEN": "(?:unclosed"}
    path = write_phrases(tmp_path, mentions=mentions, fragments=fragments)
    with pytest.raises(InputError) as e:
        load_phrases(path)
    for needle in (
        "fragments.HEART: a fragment cannot use another (<GAP>)",
        "fragments.BROKEN: not a regular expression: missing ), unterminated subpattern",
        "mentions: no entry for Edema",
    ):
        assert needle in str(e.value), str(e.value)


def test_a_key_given_twice_in_the_vocabulary_is_refused_with_its_line(tmp_path):
    text = PHRASES.read_text().replace("  Fracture:\n", "  Edema:\n    - 'oedema'\n  Fracture:\n", 1)
    path = tmp_path / "phrases.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}: line \d+: 'Edema' is given twice$"):
        load_phrases(path)


def test_yaml_merge_keys_work_in_the_vocabulary(tmp_path):
    text = PHRASES.read_text().replace("fragments:\n", "fragments:\n  <<: {EXTRA: 'x'}\n", 1)
    path = tmp_path / "phrases.yaml"
    path.write_text(text)
    assert load_phrases(path) == load_phrases()
