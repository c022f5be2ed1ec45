"""Where a shared location is: the nearest of Singapore's 28 postal districts.

Centroids are approximate (the district's main estates); good enough to suggest listings
"near you", never shown to the lead as a fact.
"""

from __future__ import annotations

import math

# District: (latitude, longitude, a name leads recognise).
DISTRICTS: dict[str, tuple[float, float, str]] = {
    "D1": (1.2833, 103.8500, "Raffles Place"),
    "D2": (1.2765, 103.8440, "Tanjong Pagar"),
    "D3": (1.2890, 103.8090, "Queenstown"),
    "D4": (1.2650, 103.8220, "Harbourfront"),
    "D5": (1.3100, 103.7650, "Clementi"),
    "D6": (1.2920, 103.8500, "City Hall"),
    "D7": (1.3000, 103.8580, "Bugis"),
    "D8": (1.3110, 103.8560, "Little India"),
    "D9": (1.3040, 103.8320, "Orchard"),
    "D10": (1.3180, 103.8070, "Bukit Timah"),
    "D11": (1.3200, 103.8400, "Novena"),
    "D12": (1.3270, 103.8530, "Toa Payoh"),
    "D13": (1.3330, 103.8700, "MacPherson"),
    "D14": (1.3180, 103.8930, "Geylang"),
    "D15": (1.3030, 103.9050, "Katong"),
    "D16": (1.3240, 103.9300, "Bedok"),
    "D17": (1.3570, 103.9880, "Changi"),
    "D18": (1.3530, 103.9450, "Tampines"),
    "D19": (1.3700, 103.8950, "Serangoon"),
    "D20": (1.3580, 103.8350, "Bishan"),
    "D21": (1.3400, 103.7760, "Upper Bukit Timah"),
    "D22": (1.3400, 103.7060, "Jurong"),
    "D23": (1.3800, 103.7600, "Bukit Panjang"),
    "D24": (1.4100, 103.7200, "Lim Chu Kang"),
    "D25": (1.4360, 103.7860, "Woodlands"),
    "D26": (1.3870, 103.8200, "Upper Thomson"),
    "D27": (1.4300, 103.8350, "Yishun"),
    "D28": (1.3920, 103.8750, "Seletar"),
}
# Farther than this from every centroid is not in Singapore as far as listings go.
MAX_DISTANCE_KM = 15.0


def district_near(latitude: float, longitude: float) -> str | None:
    """The nearest district ("D18"), or None outside Singapore."""
    best = min(DISTRICTS, key=lambda d: _km(latitude, longitude, *DISTRICTS[d][:2]))
    if _km(latitude, longitude, *DISTRICTS[best][:2]) > MAX_DISTANCE_KM:
        return None
    return best


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


# Areas leads name, and the districts they cover (regions span several).
AREA_DISTRICTS: dict[str, tuple[str, ...]] = {
    "central": ("D1", "D2", "D3", "D4", "D6", "D7", "D8", "D9", "D10", "D11"),
    "east": ("D14", "D15", "D16", "D17", "D18"),
    "west": ("D5", "D21", "D22", "D23", "D24"),
    "north": ("D25", "D26", "D27"),
    "north-east": ("D19", "D28"),
    "tampines": ("D18",),
    "pasir ris": ("D18",),
    "bedok": ("D16",),
    "marine parade": ("D15",),
    "punggol": ("D19",),
    "sengkang": ("D19",),
    "serangoon": ("D19",),
    "jurong": ("D22",),
    "clementi": ("D5",),
    "queenstown": ("D3",),
    "woodlands": ("D25",),
    "bishan": ("D20",),
    "toa payoh": ("D12",),
    "orchard": ("D9",),
    "bukit timah": ("D10", "D11", "D21"),
}


def districts_for(place: str) -> set[str]:
    """The districts a place means: "D15", "district 15", "Tampines", "East"."""
    text = place.strip().lower().replace("district", "d").replace(" ", "")
    if text.startswith("d") and text[1:].isdigit():
        return {f"D{int(text[1:])}"}
    key = place.strip().lower()
    for name, (_, _, label) in DISTRICTS.items():
        if label.lower() == key:
            return {name}
    return set(AREA_DISTRICTS.get(key, ()))
