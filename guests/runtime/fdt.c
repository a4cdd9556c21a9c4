/*
 * Read-only flattened device tree walker.  Node "offsets" are byte offsets of FDT_BEGIN_NODE
 * tokens in the structure block.  All reads are 32-bit big-endian at 4-byte aligned
 * addresses: with the MMU off, memory is Device memory and must not be read unaligned.
 */
#include "runtime.h"

#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9

static const uint8_t *blob;
static const uint8_t *structs, *strings;
static uint32_t struct_size;

static uint32_t be32(const void *p)
{
	uint32_t v = *(const volatile uint32_t *)p;
	return __builtin_bswap32(v);
}

static uint32_t align4(uint32_t v) { return (v + 3) & ~3u; }

int fdt_init(const void *p)
{
	if (!p || ((uint64_t)p & 3) || be32(p) != FDT_MAGIC)
		return -1;
	const uint8_t *b = p;
	uint32_t version = be32(b + 20);
	if (version < 16)
		return -1;
	blob = b;
	structs = b + be32(b + 8);
	strings = b + be32(b + 12);
	struct_size = version >= 17 ? be32(b + 36) : be32(b + 4) - be32(b + 8);
	return 0;
}

const void *fdt_blob(void) { return blob; }

static uint32_t token_at(uint32_t off) { return off + 4 <= struct_size ? be32(structs + off) : FDT_END; }

/* Offset of the token after the one at off (skipping a node header or a property). */
static uint32_t next_token(uint32_t off)
{
	uint32_t tag = token_at(off);
	off += 4;
	if (tag == FDT_BEGIN_NODE)
		off = align4(off + (uint32_t)strlen((const char *)structs + off) + 1);
	else if (tag == FDT_PROP)
		off = align4(off + 8 + be32(structs + off));
	return off;
}

/* Offset just past the FDT_END_NODE matching the node at off. */
static uint32_t skip_node(uint32_t off)
{
	int depth = 0;
	do {
		uint32_t tag = token_at(off);
		if (tag == FDT_BEGIN_NODE)
			depth++;
		else if (tag == FDT_END_NODE)
			depth--;
		else if (tag == FDT_END)
			return struct_size;
		off = next_token(off);
	} while (depth > 0);
	return off;
}

const char *fdt_node_name(int node) { return (const char *)structs + node + 4; }

int fdt_first_subnode(int node)
{
	if (!blob || node < 0)
		return -1;
	uint32_t off = next_token((uint32_t)node);
	for (;;) {
		uint32_t tag = token_at(off);
		if (tag == FDT_BEGIN_NODE)
			return (int)off;
		if (tag != FDT_PROP && tag != FDT_NOP)
			return -1;
		off = next_token(off);
	}
}

int fdt_next_subnode(int node)
{
	if (!blob || node < 0)
		return -1;
	uint32_t off = skip_node((uint32_t)node);
	for (;;) {
		uint32_t tag = token_at(off);
		if (tag == FDT_BEGIN_NODE)
			return (int)off;
		if (tag != FDT_NOP)
			return -1;
		off = next_token(off);
	}
}

/* "cpus" matches "cpus"; "memory" also matches "memory@40000000" (no unit given). */
static int name_matches(const char *node, const char *comp, uint32_t len)
{
	if (strncmp(node, comp, len) != 0)
		return 0;
	if (node[len] == '\0')
		return 1;
	for (uint32_t i = 0; i < len; i++)
		if (comp[i] == '@')
			return 0;
	return node[len] == '@';
}

int fdt_path_offset(const char *path)
{
	if (!blob || path[0] != '/')
		return -1;
	int node = 0;
	while (*path) {
		while (*path == '/')
			path++;
		if (!*path)
			break;
		uint32_t len = 0;
		while (path[len] && path[len] != '/')
			len++;
		int child = fdt_first_subnode(node);
		while (child >= 0 && !name_matches(fdt_node_name(child), path, len))
			child = fdt_next_subnode(child);
		if (child < 0)
			return -1;
		node = child;
		path += len;
	}
	return node;
}

const void *fdt_getprop(int node, const char *name, int *len)
{
	if (!blob || node < 0)
		return 0;
	uint32_t off = next_token((uint32_t)node);
	for (;;) {
		uint32_t tag = token_at(off);
		if (tag == FDT_PROP) {
			uint32_t plen = be32(structs + off + 4);
			const char *pname = (const char *)strings + be32(structs + off + 8);
			if (strcmp(pname, name) == 0) {
				if (len)
					*len = (int)plen;
				return structs + off + 12;
			}
		} else if (tag != FDT_NOP) {
			return 0;
		}
		off = next_token(off);
	}
}

/* The parent is found by walking from the root: the format has no back links. */
static int parent_search(int node, int target)
{
	for (int c = fdt_first_subnode(node); c >= 0; c = fdt_next_subnode(c)) {
		if (c == target)
			return node;
		if (c < target && target < (int)skip_node((uint32_t)c))
			return parent_search(c, target);
	}
	return -1;
}

int fdt_parent_offset(int node) { return node <= 0 ? -1 : parent_search(0, node); }

static unsigned cells_prop(int node, const char *name, unsigned dflt)
{
	int len;
	const void *p = fdt_getprop(node, name, &len);
	return (p && len == 4) ? be32(p) : dflt;
}

unsigned fdt_address_cells(int node) { return cells_prop(node, "#address-cells", 2); }
unsigned fdt_size_cells(int node) { return cells_prop(node, "#size-cells", 1); }

uint64_t fdt_read_cells(const void *p, unsigned cells)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < cells; i++)
		v = (v << 32) | be32((const uint8_t *)p + 4 * i);
	return v;
}

static int is_cpu_node(int node)
{
	int len;
	const char *dt = fdt_getprop(node, "device_type", &len);
	return dt && strcmp(dt, "cpu") == 0;
}

static int cpu_node(unsigned i)
{
	int cpus = fdt_path_offset("/cpus");
	for (int c = fdt_first_subnode(cpus); c >= 0; c = fdt_next_subnode(c))
		if (is_cpu_node(c) && i-- == 0)
			return c;
	return -1;
}

unsigned fdt_cpu_count(void)
{
	unsigned n = 0;
	int cpus = fdt_path_offset("/cpus");
	for (int c = fdt_first_subnode(cpus); c >= 0; c = fdt_next_subnode(c))
		n += is_cpu_node(c);
	return n;
}

uint64_t fdt_cpu_mpidr(unsigned i)
{
	int node = cpu_node(i);
	int len;
	const void *reg = fdt_getprop(node, "reg", &len);
	unsigned ac = fdt_address_cells(fdt_path_offset("/cpus"));
	if (!reg || len < (int)(4 * ac))
		return ~0UL;
	return fdt_read_cells(reg, ac) & MPIDR_AFF_MASK;
}

static const void *mem_reg(unsigned *ac, unsigned *sc)
{
	int len;
	int node = fdt_path_offset("/memory");
	*ac = fdt_address_cells(0);
	*sc = fdt_size_cells(0);
	const void *reg = fdt_getprop(node, "reg", &len);
	return (reg && len >= (int)(4 * (*ac + *sc))) ? reg : 0;
}

uint64_t fdt_mem_base(void)
{
	unsigned ac, sc;
	const uint8_t *reg = mem_reg(&ac, &sc);
	return reg ? fdt_read_cells(reg, ac) : RAM_BASE_DEFAULT;
}

uint64_t fdt_mem_size(void)
{
	unsigned ac, sc;
	const uint8_t *reg = mem_reg(&ac, &sc);
	return reg ? fdt_read_cells(reg + 4 * ac, sc) : 0;
}

const char *fdt_bootargs(void)
{
	const char *s = fdt_getprop(fdt_path_offset("/chosen"), "bootargs", 0);
	return s ? s : "";
}

/* First node (in DT order) whose "compatible" string list contains compat; -1 if none. */
int fdt_find_compatible(const char *compat)
{
	if (!blob)
		return -1;
	for (uint32_t off = 0; token_at(off) != FDT_END; off = next_token(off)) {
		if (token_at(off) != FDT_BEGIN_NODE)
			continue;
		int len;
		const char *p = fdt_getprop((int)off, "compatible", &len);
		for (const char *end = p + (p ? len : 0); p && p < end; p += strlen(p) + 1)
			if (strcmp(p, compat) == 0)
				return (int)off;
	}
	return -1;
}

int fdt_irq_intid(int node, unsigned index)
{
	int len;
	const uint8_t *p = fdt_getprop(node, "interrupts", &len);
	if (!p || len < (int)(12 * (index + 1)))
		return -1;
	uint32_t type = be32(p + 12 * index), num = be32(p + 12 * index + 4);
	if (type == 0)
		return (int)(num + 32);
	if (type == 1)
		return (int)(num + 16);
	return -1;
}
