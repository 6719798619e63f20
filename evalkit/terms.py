"""How model terms are written and named: covariate terms, formulas, coefficient names.

A covariate term is a column as written (``age``), ``log1p(column)`` or ``C(column)``
(:func:`parse_term`); a propensity formula is a patsy right-hand side whose columns
:func:`formula_names` lists. Params validation, the analysis spec and the design read
terms through these functions only. :data:`FORMULA_FUNCTIONS` are the names a formula
may use that are not columns, and :func:`r_term_name` is the one namer of fitted
coefficients (models, propensity scores, balance tables), as R names them.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import patsy

#: Transforms a covariate term may carry.
TRANSFORMS = ("log1p", "C")

#: Names a formula may use that are functions (or constants), not columns of the data.
FORMULA_FUNCTIONS = frozenset({
    "C", "I", "Q", "np", "numpy", "center", "standardize", "scale", "bs", "cr", "cc", "te",
    "log", "log1p", "exp", "sqrt", "abs", "Treatment", "Sum", "Diff", "Poly", "Helmert",
    "True", "False", "None"})


def r_term_name(name: str) -> str:
    """Translate a patsy column name into the name R gives the same column.

    ``Intercept`` -> ``(Intercept)``; ``g[T.b]`` -> ``gb``; ``C(g)[T.b]`` -> ``C(g)b``
    (the term as written, then the level, as R's ``factor(g)b``); ``flag[T.True]`` ->
    ``flagTRUE``; ``I(x ** 2)`` -> ``I(x^2)``; ``np.log(x)`` -> ``log(x)``;
    interactions keep R's ``a:b``. The one namer of coefficients: count, cost and
    survival models, propensity models and balance tables all use it.

    Examples
    --------
    >>> r_term_name("I(age ** 2)")
    'I(age^2)'
    >>> r_term_name("sex[T.M]:age")
    'sexM:age'
    >>> r_term_name("C(race)[T.hispan]")
    'C(race)hispan'
    """
    if name == "Intercept":
        return "(Intercept)"

    def level(match: re.Match) -> str:
        value = match.group(1)
        return {"True": "TRUE", "False": "FALSE"}.get(value, value)

    out = re.sub(r"\[T\.([^\]]*)\]", level, name)
    out = re.sub(r"\[([^\]]*)\]", level, out)
    out = out.replace(" ** ", "^").replace("**", "^")
    out = re.sub(r"\bnp\.|\bnumpy\.", "", out)
    return out


@dataclass(frozen=True)
class Term:
    """One covariate as it enters the models.

    Attributes
    ----------
    column : the data column the term reads.
    transform : None (the column as written), ``"log1p"`` (log(1 + x)) or ``"C"``
        (categories).
    source : where it came from: ``"params"`` or ``"default"``.
    """

    column: str
    transform: str | None = None
    source: str = "params"

    @property
    def expression(self) -> str:
        """The term as written in a formula or the params: ``age``, ``log1p(x)``, ``C(r)``."""
        return f"{self.transform}({self.column})" if self.transform else self.column

    @property
    def name(self) -> str:
        """The model-frame column (or formula piece) the term becomes."""
        if self.transform == "log1p":
            return f"log1p_{self.column}"
        return self.expression


def parse_term(text: str, source: str = "params") -> Term:
    """A covariate term from its written form.

    ``"age"`` -> the column as written; ``"log1p(baseline_cost)"`` -> log(1 + x);
    ``"C(region)"`` -> categories. Anything else raises ``ValueError`` (params
    validation reports it under the key).

    Examples
    --------
    >>> parse_term("log1p(baseline_total_cost)").name
    'log1p_baseline_total_cost'
    >>> parse_term("log1p_baseline_cost").transform is None
    True
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a covariate term must be a column name, log1p(column) or C(column)")
    s = text.strip()
    m = re.fullmatch(r"(\w+)\(\s*([A-Za-z_]\w*)\s*\)", s)
    if m:
        if m.group(1) not in TRANSFORMS:
            raise ValueError(f"covariate term {s!r}: transform {m.group(1)!r} is not one of "
                             f"{', '.join(TRANSFORMS)} (write the transformed column into the "
                             "data, or use one of these)")
        return Term(m.group(2), m.group(1), source)
    if not re.fullmatch(r"[A-Za-z_]\w*", s):
        raise ValueError(f"covariate term {s!r}: give a column name, log1p(column) or "
                         "C(column)")
    return Term(s, None, source)


def term_columns(terms) -> list[str]:
    """The data columns a list of terms (or their written forms) reads, in order."""
    out = []
    for t in terms:
        c = (t if isinstance(t, Term) else parse_term(t)).column
        if c not in out:
            out.append(c)
    return out


def formula_names(formula: str) -> list[str]:
    """Column names a propensity formula right-hand side uses, in order.

    ``"C(sex) + age + I(age**2)"`` -> ``["sex", "age"]``. Raises ``ValueError`` (so that
    params validation reports it under ``design.formula``) when the formula cannot be
    parsed or has a left-hand side.

    Examples
    --------
    >>> formula_names("C(education) + smokeyrs + I(smokeyrs**2)")
    ['education', 'smokeyrs']
    """
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError("design.formula must be a non-empty right-hand side such as "
                         "'age + C(sex) + I(age**2)'")
    if "~" in formula:
        raise ValueError(f"design.formula '{formula}' has a '~': give only the right-hand side "
                         "(the treatment is known)")
    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as exc:
        raise ValueError(f"design.formula '{formula}' cannot be parsed: {exc}") from None
    names: list[str] = []
    for term in desc.rhs_termlist:
        for factor in term.factors:
            try:
                tree = ast.parse(factor.code, mode="eval")
            except SyntaxError:
                raise ValueError(f"design.formula: cannot parse term '{factor.code}'") from None
            for node in ast.walk(tree):
                if (isinstance(node, ast.Name) and node.id not in FORMULA_FUNCTIONS
                        and node.id not in names):
                    names.append(node.id)
    if not names:
        raise ValueError(f"design.formula '{formula}' uses no column")
    return names
