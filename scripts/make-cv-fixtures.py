#!/usr/bin/env python3
"""Writes the CV fixtures cv-processor's tests read, with real document tools:
reportlab for PDFs (one column, two columns, encrypted, image only) and python-docx
for DOCX (one column, two columns). Run it again after changing a CV below:

    pip install reportlab python-docx
    python3 scripts/make-cv-fixtures.py crates/cv-processor/tests/fixtures
"""

import io
import sys
from pathlib import Path

from docx import Document
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas
from reportlab.platypus import BaseDocTemplate, Frame, FrameBreak, PageTemplate, Paragraph, Spacer

NAME = "Priya Raman"
CONTACT = "priya.raman@example.com | +44 20 7946 0321 | github.com/praman"
SUMMARY = ("Backend engineer with nine years of experience building payment and data "
           "platforms in Rust and Go.")
EXPERIENCE = [
    ("Staff Engineer, Ledgerline | 2021 - Present",
     "Led the move of the settlement service to Rust; p99 latency fell from 40 ms to 6 ms."),
    ("Senior Software Engineer, Brightpay | 2017 - 2021",
     "Built the Go ingestion pipeline on Kafka and PostgreSQL handling 20,000 events per second."),
    ("Software Engineer, Northwind Analytics | 2015 - 2017",
     "Wrote ETL jobs in Python and Airflow; introduced Docker and CI/CD."),
]
EDUCATION = ["MSc Computer Science, University of Edinburgh, 2015"]
SKILLS = ["Rust, Go, Python, SQL", "PostgreSQL, Kafka, Redis", "Kubernetes, Terraform, AWS"]


def styles():
    sheet = getSampleStyleSheet()
    return sheet["Title"], sheet["Heading2"], sheet["BodyText"]


def one_column_pdf(path):
    title, heading, body = styles()
    story = [Paragraph(NAME, title), Paragraph(CONTACT, body), Paragraph("Summary", heading),
             Paragraph(SUMMARY, body), Paragraph("Experience", heading)]
    for role, detail in EXPERIENCE:
        story += [Paragraph(role, body), Paragraph(detail, body), Spacer(1, 4)]
    story += [Paragraph("Education", heading)] + [Paragraph(e, body) for e in EDUCATION]
    story += [Paragraph("Skills", heading)] + [Paragraph(s, body) for s in SKILLS]
    doc = BaseDocTemplate(str(path), pagesize=A4, title="CV")
    doc.addPageTemplates([PageTemplate(frames=[Frame(2 * cm, 2 * cm, A4[0] - 4 * cm, A4[1] - 4 * cm)])])
    doc.build(story)


def two_column_pdf(path):
    """A narrow left column (contact, skills, education) beside the experience."""
    title, heading, body = styles()
    width, height = A4
    left = Frame(1.5 * cm, 2 * cm, 5.5 * cm, height - 4 * cm, id="left")
    right = Frame(7.5 * cm, 2 * cm, width - 9 * cm, height - 4 * cm, id="right")
    story = [Paragraph(NAME, heading), Paragraph(CONTACT.replace(" | ", "<br/>"), body),
             Paragraph("Skills", heading)] + [Paragraph(s, body) for s in SKILLS]
    story += [Paragraph("Education", heading)] + [Paragraph(e, body) for e in EDUCATION]
    story += [FrameBreak(), Paragraph("Summary", heading), Paragraph(SUMMARY, body),
              Paragraph("Experience", heading)]
    for role, detail in EXPERIENCE:
        story += [Paragraph(role, body), Paragraph(detail, body), Spacer(1, 4)]
    doc = BaseDocTemplate(str(path), pagesize=A4, title="CV")
    doc.addPageTemplates([PageTemplate(frames=[left, right])])
    doc.build(story)


def encrypted_pdf(path):
    c = canvas.Canvas(str(path), pagesize=A4, encrypt="open-sesame")
    c.drawString(2 * cm, 27 * cm, f"{NAME} - {SUMMARY}")
    c.save()


def scanned_pdf(path):
    """A page that is only a picture of text, as a scanner makes."""
    from PIL import Image, ImageDraw
    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate([NAME, CONTACT, SUMMARY] + [r for r, _ in EXPERIENCE]):
        draw.text((80, 80 + 40 * i), line, fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    c = canvas.Canvas(str(path), pagesize=A4)
    c.drawImage(ImageReader(buffer), 0, 0, width=A4[0], height=A4[1])
    c.save()


def docx(path, columns):
    doc = Document()
    doc.add_heading(NAME, level=0)
    doc.add_paragraph(CONTACT)
    if columns == 2:
        cols = doc.sections[0]._sectPr.find(qn("w:cols"))
        if cols is None:
            cols = OxmlElement("w:cols")
            doc.sections[0]._sectPr.append(cols)
        cols.set(qn("w:num"), "2")
    doc.add_heading("Summary", level=1)
    doc.add_paragraph(SUMMARY)
    doc.add_heading("Experience", level=1)
    for role, detail in EXPERIENCE:
        doc.add_paragraph(role)
        doc.add_paragraph(detail, style="List Bullet")
    doc.add_heading("Education", level=1)
    for e in EDUCATION:
        doc.add_paragraph(e)
    doc.add_heading("Skills", level=1)
    table = doc.add_table(rows=1, cols=len(SKILLS))
    for cell, skills in zip(table.rows[0].cells, SKILLS):
        cell.text = skills
    doc.save(str(path))


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "crates/cv-processor/tests/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    one_column_pdf(out / "one_column.pdf")
    two_column_pdf(out / "two_column.pdf")
    encrypted_pdf(out / "encrypted.pdf")
    scanned_pdf(out / "scanned.pdf")
    docx(out / "one_column.docx", 1)
    docx(out / "two_column.docx", 2)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()
