// CONVKIT_* environment variables, parsed one way everywhere. Each setting is read once, on
// first use, by the code that owns it (the variable is named there and in docs/settings.md);
// these helpers only turn the text into a value, so every switch spells "off", "auto" and
// numbers alike.
#pragma once
#include <cstdint>
#include <initializer_list>

namespace convkit::core::env {

// The value, or nullptr when the variable is unset or empty.
const char* text(const char* name);

// Unset or empty: `dflt`. "0": false. Anything else: true.
bool flag(const char* name, bool dflt);

// A three-way switch. Unset or empty: `unset`. "auto": -1. "0": 0. Anything else: 1.
int mode(const char* name, int unset);

// A decimal whole number. Unset, empty or not a number (trailing junk included): `dflt`.
int64_t integer(const char* name, int64_t dflt);

// The index of the value in `names`, or -1 when unset, empty or none of them.
int choice(const char* name, std::initializer_list<const char*> names);

}  // namespace convkit::core::env
