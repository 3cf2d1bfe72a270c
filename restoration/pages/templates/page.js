function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const index = Array.from(th.parentNode.children).indexOf(th);
  const ascending = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(ascending ? 'sorted-asc' : 'sorted-desc');
  const key = row => { const cell = row.children[index]; const v = cell.dataset.value ?? cell.textContent;
                       const n = parseFloat(v); return isNaN(n) ? v : n; };
  const rows = Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
function flip(button) {
  const figure = button.closest('figure'), img = figure.querySelector('img.flippable');
  const sources = JSON.parse(img.dataset.sources), labels = JSON.parse(img.dataset.labels);
  const next = (parseInt(img.dataset.shown) + 1) % sources.length;
  img.src = sources[next]; img.dataset.shown = next;
  figure.querySelector('.shown').textContent = labels[next];
}
document.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => sortTable(th)));
document.querySelectorAll('button.flip').forEach(b => b.addEventListener('click', () => flip(b)));
