"""The explicit Runge-Kutta methods shipped with ``solvers``, and a string registry.

Every constant is validated when this module is imported (``ButcherTableau.__post_init__``
checks all rooted-tree order conditions up to the claimed order), so a typo in a coefficient
fails at import time.

References
----------
Butcher (2016), *Numerical Methods for ODEs*, 3rd ed., Wiley, sec. 23-32 (Euler, midpoint,
Heun, Kutta's third-order method, classic RK4 and the 3/8 rule); Ralston, "Runge-Kutta methods
with minimum error bounds", Math. Comp. 16 (1962) 431-437; Bogacki & Shampine, "A 3(2) pair of
Runge-Kutta formulas", Appl. Math. Lett. 2 (1989) 321-325; Dormand & Prince, "A family of
embedded Runge-Kutta formulae", J. Comput. Appl. Math. 6 (1980) 19-26, with the 4th-order
continuous extension of Shampine, "Some practical Runge-Kutta formulas", Math. Comp. 46 (1986)
135-150 (coefficients as in Hairer-Norsett-Wanner I, sec. II.6 and scipy's RK45); Tsitouras,
"Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying assumption",
Comput. Math. Appl. 62 (2011) 770-775 (16-digit decimals as distributed with OrdinaryDiffEq.jl);
Cash & Karp, "A variable order Runge-Kutta method for initial value problems with rapidly
varying right-hand sides", ACM Trans. Math. Softw. 16 (1990) 201-222.
"""
from __future__ import annotations

from ._tableau import ButcherTableau

EULER = ButcherTableau(c=[0.0], a=[[0.0]], b=[1.0], order=1, name="euler")

MIDPOINT = ButcherTableau(
    c=[0, 1 / 2],
    a=[[0, 0],
       [1 / 2, 0]],
    b=[0, 1], order=2, name="midpoint")

HEUN = ButcherTableau(
    c=[0, 1],
    a=[[0, 0],
       [1, 0]],
    b=[1 / 2, 1 / 2], order=2, name="heun")

RALSTON = ButcherTableau(
    c=[0, 2 / 3],
    a=[[0, 0],
       [2 / 3, 0]],
    b=[1 / 4, 3 / 4], order=2, name="ralston")

RK3 = ButcherTableau(  # Kutta (1901)
    c=[0, 1 / 2, 1],
    a=[[0, 0, 0],
       [1 / 2, 0, 0],
       [-1, 2, 0]],
    b=[1 / 6, 2 / 3, 1 / 6], order=3, name="rk3")

RK4 = ButcherTableau(
    c=[0, 1 / 2, 1 / 2, 1],
    a=[[0, 0, 0, 0],
       [1 / 2, 0, 0, 0],
       [0, 1 / 2, 0, 0],
       [0, 0, 1, 0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], order=4, name="rk4")

RK38 = ButcherTableau(
    c=[0, 1 / 3, 2 / 3, 1],
    a=[[0, 0, 0, 0],
       [1 / 3, 0, 0, 0],
       [-1 / 3, 1, 0, 0],
       [1, -1, 1, 0]],
    b=[1 / 8, 3 / 8, 3 / 8, 1 / 8], order=4, name="rk38")

_BOSH3_B = [2 / 9, 1 / 3, 4 / 9, 0]
BOSH3 = ButcherTableau(
    c=[0, 1 / 2, 3 / 4, 1],
    a=[[0, 0, 0, 0],
       [1 / 2, 0, 0, 0],
       [0, 3 / 4, 0, 0],
       _BOSH3_B],
    b=_BOSH3_B,
    # b - b_hat with the 2nd-order b_hat = (7/24, 1/4, 1/3, 1/8).
    b_err=[2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, 0 - 1 / 8],
    order=3, err_order=2, name="bosh3")

_DOPRI5_B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
DOPRI5 = ButcherTableau(
    c=[0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1],
    a=[[0, 0, 0, 0, 0, 0, 0],
       [1 / 5, 0, 0, 0, 0, 0, 0],
       [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
       [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
       [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
       [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
       _DOPRI5_B],
    b=_DOPRI5_B,
    # b - b_hat with the 4th-order b_hat of Dormand & Prince.
    b_err=[35 / 384 - 5179 / 57600, 0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40],
    order=5, err_order=4, name="dopri5",
    # Shampine's continuous extension: b_i(theta) = sum_q dense[i, q-1] theta^q (order 4).
    dense=[[1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
           [0, 0, 0, 0],
           [0, 131558114200 / 32700410799, -68118460800 / 10900136933,
            87487479700 / 32700410799],
           [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
           [0, 127303824393 / 49829197408, -318862633887 / 49829197408,
            701980252875 / 199316789632],
           [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
           [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423]])

_TSIT5_B = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
            -3.290069515436081, 2.324710524099774, 0]
TSIT5 = ButcherTableau(
    c=[0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1],
    a=[[0, 0, 0, 0, 0, 0, 0],
       [0.161, 0, 0, 0, 0, 0, 0],
       [-0.008480655492356989, 0.335480655492357, 0, 0, 0, 0, 0],
       [2.8971530571054935, -6.359448489975075, 4.3622954328695815, 0, 0, 0, 0],
       [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525,
        0, 0, 0],
       [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
        -0.028269050394068383, 0, 0],
       _TSIT5_B],
    b=_TSIT5_B,
    b_err=[0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
           0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66],
    order=5, err_order=4, name="tsit5",
    # Tsitouras' 4th-order continuous extension, expanded in powers theta^1..theta^4.
    dense=[[1, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
           [0, 0.1317, -0.2234, 0.1017],
           [0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
           [0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
           [0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
           [0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
           [0, 1.5, -4, 2.5]])

_CASH_KARP_B = [37 / 378, 0, 250 / 621, 125 / 594, 0, 512 / 1771]
CASH_KARP = ButcherTableau(
    c=[0, 1 / 5, 3 / 10, 3 / 5, 1, 7 / 8],
    a=[[0, 0, 0, 0, 0, 0],
       [1 / 5, 0, 0, 0, 0, 0],
       [3 / 40, 9 / 40, 0, 0, 0, 0],
       [3 / 10, -9 / 10, 6 / 5, 0, 0, 0],
       [-11 / 54, 5 / 2, -70 / 27, 35 / 27, 0, 0],
       [1631 / 55296, 175 / 512, 575 / 13824, 44275 / 110592, 253 / 4096, 0]],
    b=_CASH_KARP_B,
    # b - b_hat with the embedded 4th-order b_hat of Cash & Karp (1990).
    b_err=[37 / 378 - 2825 / 27648, 0, 250 / 621 - 18575 / 48384, 125 / 594 - 13525 / 55296,
           0 - 277 / 14336, 512 / 1771 - 1 / 4],
    order=5, err_order=4, name="cash_karp")

TABLEAUX = {tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RALSTON, RK3, RK4, RK38, BOSH3,
                                       DOPRI5, TSIT5, CASH_KARP)}


def get_tableau(name: str | ButcherTableau) -> ButcherTableau:
    """Return the tableau registered as ``name`` (a ``ButcherTableau`` is returned unchanged).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(name, ButcherTableau):
        return name
    try:
        return TABLEAUX[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Runge-Kutta method {name!r}; known tableaux: "
                         f"{sorted(TABLEAUX)} (or pass a ButcherTableau)") from None


__all__ = ["TABLEAUX", "get_tableau", "EULER", "MIDPOINT", "HEUN", "RALSTON", "RK3", "RK4",
           "RK38", "BOSH3", "DOPRI5", "TSIT5", "CASH_KARP"]
