import Link from 'next/link';

export default function NotFound() {
  return (
    <>
      <h1>Not found</h1>
      <p className="muted">
        There is nothing here. Back to the <Link href="/">home page</Link>.
      </p>
    </>
  );
}
