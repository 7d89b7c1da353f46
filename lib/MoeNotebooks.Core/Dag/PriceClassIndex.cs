namespace MoeNotebooks.Dag;

/// <summary>
/// The builder's price classes, each with its id (the order of first use), looked up once per operation appended. An
/// open-addressing table written here rather than a <c>Dictionary&lt;PriceClass, int&gt;</c>: a framework generic over
/// one of our structs is compiled just in time in every process, and a short run (<c>moe evaluate</c>, a sweep) spends
/// most of its life in that instantiation's unoptimised first-tier code, where this type is compiled ahead of time with
/// the rest of the assembly (ReadyToRun). Same classes, same ids in the same order as the dictionary gave.
/// </summary>
internal sealed class PriceClassIndex
{
    private PriceClass[] _classes = new PriceClass[16];   // by id (arrays, not List<PriceClass>: see the summary)
    private int _count;
    private int[] _slots = new int[64];   // class id + 1; 0 = empty; power-of-two length, at most half full

    public int Count => _count;

    public PriceClass this[int id] => id < _count ? _classes[id] : throw new ArgumentOutOfRangeException(nameof(id));

    public PriceClass[] ToArray() => _classes.AsSpan(0, _count).ToArray();

    /// <summary>The id of <paramref name="c"/>, added with the next id when it is new.</summary>
    public int IdOf(in PriceClass c)
    {
        var mask = _slots.Length - 1;
        for (var i = Hash(c) & mask; ; i = (i + 1) & mask)
        {
            var slot = _slots[i];
            if (slot == 0)
            {
                var id = _count;
                if (id == _classes.Length) Array.Resize(ref _classes, 2 * id);
                _classes[_count++] = c;
                _slots[i] = id + 1;
                if (2 * _count > _slots.Length) Rehash();
                return id;
            }
            if (_classes[slot - 1].Equals(c)) return slot - 1;
        }
    }

    private void Rehash()
    {
        _slots = new int[_slots.Length * 2];
        var mask = _slots.Length - 1;
        for (var id = 0; id < _count; id++)
        {
            var i = Hash(_classes[id]) & mask;
            while (_slots[i] != 0) i = (i + 1) & mask;
            _slots[i] = id + 1;
        }
    }

    private static int Hash(in PriceClass c) => c.GetHashCode() & int.MaxValue;
}
