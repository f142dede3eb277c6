#include "policy/address_set.h"

#include <algorithm>
#include <limits>

namespace smtpgate {

namespace {

// -Wpedantic rejects __int128 unless marked as an extension.
__extension__ typedef unsigned __int128 U128;

constexpr uint32_t kNoEntry = std::numeric_limits<uint32_t>::max();
// The bucket index costs 256 KiB per family, so small sets (most access lists) go without.
constexpr unsigned kBucketBits = 16;
constexpr size_t kIndexThreshold = 4096;

uint32_t v4_key(const IpAddress& ip) {
  return ip.v4_host_order();
}

U128 v6_key(const IpAddress& ip) {
  U128 k = 0;
  for (uint8_t b : ip.bytes()) k = k << 8 | b;
  return k;
}

template <class Key>
Key prefix_mask(unsigned prefix) {
  constexpr unsigned bits = sizeof(Key) * 8;
  // Shifting by the full width is undefined, so /0 is handled apart.
  return prefix == 0 ? Key(0) : static_cast<Key>(~Key(0) << (bits - prefix));
}

struct Entry {
  Cidr cidr;
  Access access;
  uint32_t origin;
};

// The sweep must meet a range before the ranges nested in it: entries sort by family, first
// address, then shorter prefix first. Among duplicates of one CIDR, Deny sorts first (and a
// stable sort keeps insertion order after that), so dedupe keeps the entry that decides.
bool entry_order(const Entry& a, const Entry& b) {
  if (a.cidr.address.is_v6() != b.cidr.address.is_v6()) return b.cidr.address.is_v6();
  if (a.cidr.address != b.cidr.address) return a.cidr.address < b.cidr.address;
  if (a.cidr.prefix != b.cidr.prefix) return a.cidr.prefix < b.cidr.prefix;
  return a.access == Access::Deny && b.access == Access::Allow;
}

}  // namespace

struct AddressSet::Impl {
  // Disjoint segments sorted by start; a segment runs up to the next start. owner is the
  // index into entries of the most specific entry covering it, or kNoEntry.
  template <class Key>
  struct Table {
    static constexpr unsigned kBucketShift = sizeof(Key) * 8 - kBucketBits;

    std::vector<Key> starts;
    std::vector<uint32_t> owners;
    // For large tables, bucket[b] is the first segment whose start has top bits >= b, so a
    // lookup searches one small slice instead of the whole array: a plain binary search over
    // millions of starts spends most of its time on cache misses in the last steps.
    std::vector<uint32_t> bucket;

    uint32_t find(Key k) const {
      auto lo = starts.begin(), hi = starts.end();
      if (!bucket.empty()) {
        auto b = static_cast<size_t>(k >> kBucketShift);
        lo = starts.begin() + bucket[b];
        hi = starts.begin() + bucket[b + 1];
      }
      // Every start before lo is <= k, so the answer is at most one slot before the slice.
      auto it = std::upper_bound(lo, hi, k);
      if (it == starts.begin()) return kNoEntry;
      return owners[static_cast<size_t>(it - starts.begin()) - 1];
    }

    void index() {
      bucket.clear();
      if (starts.size() < kIndexThreshold) return;
      bucket.resize((size_t{1} << kBucketBits) + 1);
      size_t seg = 0;
      for (size_t b = 0; b < (size_t{1} << kBucketBits); ++b) {
        while (seg < starts.size() && static_cast<size_t>(starts[seg] >> kBucketShift) < b) ++seg;
        bucket[b] = static_cast<uint32_t>(seg);
      }
      bucket.back() = static_cast<uint32_t>(starts.size());
    }
  };

  std::vector<Entry> entries;  // deduplicated after build
  Table<uint32_t> v4;
  Table<U128> v6;
  bool built = false;

  template <class Key>
  void build_table(Table<Key>& table, bool want_v6, Key (*key_of)(const IpAddress&));
};

namespace {

template <class Key>
struct Range {
  Key first;
  Key last;
  uint32_t entry;
};

}  // namespace

template <class Key>
void AddressSet::Impl::build_table(Table<Key>& table, bool want_v6,
                                   Key (*key_of)(const IpAddress&)) {
  std::vector<Range<Key>> ranges;
  for (uint32_t i = 0; i < entries.size(); ++i) {
    const Cidr& c = entries[i].cidr;
    if (c.address.is_v6() != want_v6) continue;
    Key mask = prefix_mask<Key>(c.prefix);
    Key first = key_of(c.address) & mask;
    ranges.push_back({first, static_cast<Key>(first | ~mask), i});
  }
  // entries are already sorted (family, address, prefix), so ranges arrive with first
  // ascending and, for equal first, the wider range first.

  table.starts.clear();
  table.owners.clear();
  table.starts.reserve(ranges.size() * 2 + 1);
  table.owners.reserve(ranges.size() * 2 + 1);
  auto emit = [&](Key start, uint32_t owner) {
    // Several events can land on one start (a range ends where the next begins, or nested
    // ranges share a first address); the last event describes the state from there on.
    if (!table.starts.empty() && table.starts.back() == start) {
      table.owners.back() = owner;
      if (table.owners.size() >= 2 && table.owners[table.owners.size() - 2] == owner) {
        table.starts.pop_back();
        table.owners.pop_back();
      }
      return;
    }
    if (!table.owners.empty() && table.owners.back() == owner) return;
    table.starts.push_back(start);
    table.owners.push_back(owner);
  };

  // CIDR ranges are either nested or disjoint, so a stack of open ranges suffices; its top
  // is the most specific range covering the sweep position.
  std::vector<Range<Key>> open;
  auto close_until = [&](const Key* next_first) {
    while (!open.empty() && (!next_first || open.back().last < *next_first)) {
      Range<Key> done = open.back();
      open.pop_back();
      // A range ending at the top of the address space has nothing after it.
      if (done.last == static_cast<Key>(~Key(0))) continue;
      emit(static_cast<Key>(done.last + 1), open.empty() ? kNoEntry : open.back().entry);
    }
  };
  for (const Range<Key>& r : ranges) {
    close_until(&r.first);
    emit(r.first, r.entry);
    open.push_back(r);
  }
  close_until(nullptr);

  table.starts.shrink_to_fit();
  table.owners.shrink_to_fit();
  table.index();
}

void AddressSet::add(const Cidr& entry, Access access, uint32_t origin) {
  if (!impl_) {
    impl_ = std::make_shared<Impl>();
  } else if (impl_->built) {
    // Copies taken earlier keep their built snapshot; this set starts a new one.
    auto fresh = std::make_shared<Impl>();
    fresh->entries = impl_->entries;
    impl_ = std::move(fresh);
  }
  // Cidr::parse never yields a longer prefix; a hand-made one would make the mask shift
  // undefined, so it is clamped rather than trusted.
  Cidr c = entry;
  c.prefix = std::min<uint8_t>(c.prefix, c.address.is_v6() ? 128 : 32);
  impl_->entries.push_back({c, access, origin});
}

void AddressSet::build() {
  if (!impl_ || impl_->built) return;
  Impl& impl = *impl_;
  std::stable_sort(impl.entries.begin(), impl.entries.end(), entry_order);
  auto last = std::unique(impl.entries.begin(), impl.entries.end(),
                          [](const Entry& a, const Entry& b) { return a.cidr == b.cidr; });
  impl.entries.erase(last, impl.entries.end());
  impl.entries.shrink_to_fit();

  impl.build_table<uint32_t>(impl.v4, false, v4_key);
  impl.build_table<U128>(impl.v6, true, v6_key);
  impl.built = true;
}

std::optional<AddressSet::Match> AddressSet::lookup(const IpAddress& ip) const {
  if (!impl_) return std::nullopt;
  const Impl& impl = *impl_;
  if (!impl.built) {
    // A caller forgot build(). Answer correctly, slowly, rather than silently match nothing:
    // an access list that matched nothing would quietly fall back to its default.
    const Entry* best = nullptr;
    for (const Entry& e : impl.entries) {
      if (!e.cidr.contains(ip)) continue;
      if (!best || e.cidr.prefix > best->cidr.prefix ||
          (e.cidr.prefix == best->cidr.prefix && e.access == Access::Deny &&
           best->access == Access::Allow)) {
        best = &e;
      }
    }
    if (!best) return std::nullopt;
    return Match{best->access, best->cidr, best->origin};
  }
  uint32_t owner = ip.is_v4() ? impl.v4.find(v4_key(ip)) : impl.v6.find(v6_key(ip));
  if (owner == kNoEntry) return std::nullopt;
  const Entry& e = impl.entries[owner];
  return Match{e.access, e.cidr, e.origin};
}

size_t AddressSet::size() const {
  return impl_ ? impl_->entries.size() : 0;
}

}  // namespace smtpgate
